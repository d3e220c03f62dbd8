"""W1 send throughput, W2 offline catch-up, W5 batch ack."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from app.bench.ceiling import ceilings
from app.bench.client import Api, BenchDevice, Progress, bounded, open_api
from app.bench.context import Context
from app.bench.push import cpu_per_operation, gateway_url, running_gateway
from app.bench.stats import (
    BenchError,
    VerificationError,
    summarize,
    verify_gap_free,
    verify_sequence,
)

__all__ = ["Pair", "make_pairs", "send_pairs", "verify_pairs", "w1", "w2", "w5"]


@dataclass
class Pair:
    sender: BenchDevice
    recipient: BenchDevice
    sent: list[tuple[int, str]] = field(default_factory=list)  # (message id, body), in order


async def make_pairs(api: Api, ctx: Context, tag: str, count: int) -> list[Pair]:
    ids = ctx.user_ids(tag, "s", count) + ctx.user_ids(tag, "r", count)
    devices = await api.create_devices(ids, ctx.options.setup_concurrency, tag)
    return [Pair(devices[i], devices[count + i]) for i in range(count)]


async def send_pairs(
    api: Api,
    pairs: list[Pair],
    clients: int,
    total: int | None,
    progress: Progress,
    stop: asyncio.Event | None = None,
) -> tuple[list[float], float]:
    """`clients` concurrent senders; `total` messages, or until `stop` is set.

    A pair has at most one send in flight, so its messages commit in the order they were
    sent and the recipient must see exactly that order.
    """
    idle: asyncio.Queue[Pair] = asyncio.Queue()
    for pair in pairs:
        idle.put_nowait(pair)
    latencies: list[float] = []
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while (total is None or issued < total) and not (stop is not None and stop.is_set()):
            pair = await idle.get()
            issued += 1
            n = len(pair.sent)
            body = f"{pair.sender.user_id}>{pair.recipient.user_id}#{n}"
            start = time.perf_counter()
            sent = await api.send(pair.sender, pair.recipient.user_id, body, f"c{n}")
            latencies.append(time.perf_counter() - start)
            pair.sent.append((sent["message"]["id"], body))
            idle.put_nowait(pair)
            progress.step()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(clients, len(pairs)))))
    return latencies, time.perf_counter() - began


async def verify_pairs(api: Api, pairs: list[Pair], label: str) -> int:
    """Each recipient holds its sender's messages exactly once, in order; returns the count."""

    async def one(pair: Pair) -> int:
        entries, _, _ = await api.drain(pair.recipient, since=0)
        while len(entries) < len(pair.sent):
            # Then wait, as a client does once has_more is false: a page read on a streaming
            # replica may end at what it has replayed (the primary has more), and the wait
            # reads the primary. A message really lost never comes: the wait times out.
            since = entries[-1]["version"] if entries else 0
            page, _ = await api.sync(pair.recipient, since=since, timeout=2)
            if not page["entries"]:
                break
            more, _, _ = await api.drain(pair.recipient, since=page["next_since"])
            entries += page["entries"] + more
        received = [(e["data"]["id"], e["data"]["body"]) for e in entries]
        name = f"{label} {pair.sender.user_id}->{pair.recipient.user_id}"
        verify_sequence(name, pair.sent, received)
        verify_gap_free(name, [e["version"] for e in entries], after=0)
        return len(received)

    return sum(await bounded(8, [lambda p=p: one(p) for p in pairs]))  # type: ignore[misc]


async def w1(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    if o.w1_push and ctx.gateway_port is None:
        raise BenchError("W1 --w1-push needs --pg or --push-gateway-port")
    async with AsyncExitStack() as stack:
        api = await stack.enter_async_context(open_api(ctx.url, o.w1_clients + 8))
        pairs = await make_pairs(api, ctx, "w1", o.w1_pairs)
        gateway = None
        if o.w1_push and ctx.gateway_port is not None:
            # Every recipient is offline with a pusher: each is pushed during the run.
            gateway = await stack.enter_async_context(running_gateway(ctx.gateway_port, 0))
            url = gateway_url(ctx.gateway_port)
            for pair in pairs:
                await api.pusher(pair.recipient, f"{ctx.run_id}-{pair.recipient.user_id}", url)
        progress = Progress("W1 sent", o.w1_messages)
        # CPU of the server's processes and its database's backends during the sends
        # (--pg only): comparable across runs on a shared machine, unlike messages/s.
        cpu: dict[str, float] = {}
        async with cpu_per_operation(ctx, cpu, o.w1_messages, 1000, 3):
            latencies, wall = await send_pairs(api, pairs, o.w1_clients, o.w1_messages, progress)
        pushes = gateway.requests if gateway is not None else None
        verified = await verify_pairs(api, pairs, "W1")
    if verified != o.w1_messages:
        raise VerificationError(f"W1: {verified} messages verified, {o.w1_messages} sent")
    # Once W1 is verified: pgbench's sends go to the same users.
    ceiling = await ceilings(ctx, ctx.user_prefix("w1"))
    rate = o.w1_messages / wall
    return {
        "push": o.w1_push,
        "pushes_during_sends": pushes,
        "pairs": o.w1_pairs,
        "clients": o.w1_clients,
        "messages": o.w1_messages,
        "wall_s": round(wall, 3),
        "messages_per_s": round(rate, 1),
        "ceiling": ceiling,
        "of_old_ceiling": _ratio(rate, ceiling, "old"),
        "of_new_ceiling": _ratio(rate, ceiling, "new"),
        "send_latency": summarize(latencies),
        "verified_messages": verified,
        "cpu_ms_per_message": cpu,
    }


def _ratio(rate: float, ceiling: dict[str, Any], statement: str) -> float | None:
    tx_per_s = ceiling.get("tx_per_s", {}).get(statement)
    return round(rate / tx_per_s, 3) if tx_per_s else None


async def w2(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    async with open_api(ctx.url, o.w2_senders + 8) as api:
        ids = ctx.user_ids("w2", "r", 1) + ctx.user_ids("w2", "s", o.w2_senders)
        device, *senders = await api.create_devices(ids, o.setup_concurrency, "W2")
        # The device takes its cursor (reads to the end, acks it), then goes away.
        entries, _, _ = await api.drain(device, since=0)
        cursor = entries[-1]["version"] if entries else 0
        await api.ack(device, cursor)
        progress = Progress("W2 arriving", o.w2_messages)
        sent: dict[str, list[tuple[int, str]]] = {s.user_id: [] for s in senders}

        async def send_from(index: int, sender: BenchDevice) -> None:
            for n in range(index, o.w2_messages, len(senders)):
                body = f"{sender.user_id}#{n}"
                reply = await api.send(sender, device.user_id, body, f"c{n}")
                sent[sender.user_id].append((reply["message"]["id"], body))
                progress.step()

        await asyncio.gather(*(send_from(i, s) for i, s in enumerate(senders)))
        began = time.perf_counter()
        entries, requests, received_bytes = await api.drain(device, since=cursor, limit=o.w2_limit)
        wall = time.perf_counter() - began
    _verify_catch_up(entries, sent, cursor, o.w2_messages)
    return {
        "messages": o.w2_messages,
        "page_limit": o.w2_limit,
        "catch_up_ms": round(wall * 1000, 3),
        "requests": requests,
        "bytes_received": received_bytes,
        "verified_messages": len(entries),
    }


def _verify_catch_up(
    entries: list[Any], sent: dict[str, list[tuple[int, str]]], cursor: int, expected: int
) -> None:
    strangers = [e for e in entries if e["data"]["from"] not in sent]
    if strangers:
        raise VerificationError(f"W2: {len(strangers)} entries from unknown senders")
    for sender, messages in sent.items():
        mine = [
            (e["data"]["id"], e["data"]["body"]) for e in entries if e["data"]["from"] == sender
        ]
        verify_sequence(f"W2 from {sender}", messages, mine)
    verify_gap_free("W2", [e["version"] for e in entries], after=cursor)
    if len(entries) != expected:
        raise VerificationError(f"W2: {len(entries)} entries caught up, {expected} sent")


async def w5(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    async with open_api(ctx.url, o.w5_devices + 8) as api:
        owners = await api.create_devices(
            ctx.user_ids("w5", "u", o.w5_users), o.setup_concurrency, "W5"
        )
        # Notes to self: each owner's latest_version becomes exactly w5_acks.
        setup = Progress("W5 setup: messages", o.w5_users * o.w5_acks)

        async def fill(owner: BenchDevice) -> None:
            for n in range(o.w5_acks):
                await api.send(owner, owner.user_id, f"note {n}", f"c{n}")
                setup.step()

        await asyncio.gather(*(fill(owner) for owner in owners))
        extra = o.w5_devices - len(owners)
        logins = [
            lambda i=i: api.login(owners[i % len(owners)].user_id, f"d{i}") for i in range(extra)
        ]
        devices = owners + await bounded(o.setup_concurrency, logins)
        progress = Progress("W5 acks", len(devices) * o.w5_acks)
        latencies: list[float] = []

        async def ack_all(device: BenchDevice) -> None:
            cursor = 0
            for version in range(1, o.w5_acks + 1):
                start = time.perf_counter()
                returned = await api.ack(device, version)
                latencies.append(time.perf_counter() - start)
                if returned < max(cursor, version):
                    raise VerificationError(
                        f"W5: device {device.device_id} acked {version} after {cursor}, "
                        f"the server answered cursor {returned}"
                    )
                cursor = returned
                progress.step()

        # As W1's, steadier across runs on a shared machine than acks/s.
        cpu: dict[str, float] = {}
        async with cpu_per_operation(ctx, cpu, len(devices) * o.w5_acks, 1_000_000, 1):
            began = time.perf_counter()
            await asyncio.gather(*(ack_all(d) for d in devices))
            wall = time.perf_counter() - began
        cursors: dict[str, int] = {}
        for owner in owners:
            cursors.update(await api.devices(owner))
    wrong = {d.device_id: cursors.get(d.device_id) for d in devices}
    wrong = {k: v for k, v in wrong.items() if v != o.w5_acks}
    if wrong:
        raise VerificationError(f"W5: {len(wrong)} devices did not end at {o.w5_acks}: {wrong}")
    total = len(devices) * o.w5_acks
    return {
        "devices": len(devices),
        "acks": total,
        "wall_s": round(wall, 3),
        "acks_per_s": round(total / wall, 1),
        "ack_latency": summarize(latencies),
        "verified_devices": len(devices),
        "cpu_us_per_ack": cpu,
    }
