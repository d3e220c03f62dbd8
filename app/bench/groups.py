"""W8 group fan-out: groups of several sizes, concurrent senders, some members long-polling.

Per size: groups of that many members (every user in one group), `w8_clients` concurrent
senders over the groups (each send from a member of the group, round robin), and one member
per group long-polling through the run. Figures: sends/s, deliveries (member entries) per
second, send latency, and the wake latency of the long-polling members (from the start of
the send to the poll's return with it). Every delivery is verified: each member's device
ends with every message of its group exactly once, in seq order, and gap-free versions.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app.bench.client import Api, BenchDevice, Progress, bounded, open_api
from app.bench.context import Context
from app.bench.groups_large import w8_large
from app.bench.stats import VerificationError, summarize, verify_gap_free

__all__ = ["w8"]


async def _poll_until(
    api: Api,
    device: BenchDevice,
    sent_at: dict[int, float],
    latencies: list[float],
    stop: asyncio.Event,
) -> None:
    since = 0
    while not stop.is_set():
        page, _ = await api.sync(device, since=since, timeout=2, limit=1000)
        returned = time.perf_counter()
        for entry in page["entries"]:
            if entry["kind"] == "message" and entry["data"]["from"] != device.user_id:
                began = sent_at.get(entry["data"]["id"])
                if began is not None:
                    latencies.append(returned - began)
        since = page["next_since"]


async def _one_size(api: Api, ctx: Context, size: int) -> dict[str, Any]:
    o = ctx.options
    tag = f"w8s{size}"
    # w8_users per size, each in exactly one group (a remainder smaller than a group idles).
    pool = o.w8_users
    devices = await api.create_devices(ctx.user_ids(tag, "m", pool), o.setup_concurrency, tag)
    groups: list[tuple[str, list[BenchDevice]]] = []
    for first in range(0, pool - pool % size, size):
        members = devices[first : first + size]
        group_id = await api.create_group(members[0], tag, [m.user_id for m in members[1:]])
        groups.append((group_id, members))
    sent: dict[str, list[int]] = {group_id: [] for group_id, _ in groups}
    sent_at: dict[int, float] = {}
    send_latencies: list[float] = []
    wake_latencies: list[float] = []
    stop = asyncio.Event()
    pollers = [
        asyncio.create_task(_poll_until(api, members[-1], sent_at, wake_latencies, stop))
        for _, members in groups
    ]
    await asyncio.sleep(0.5)  # the polls park before the first send
    idle: asyncio.Queue[tuple[str, list[BenchDevice]]] = asyncio.Queue()
    for group in groups:
        idle.put_nowait(group)
    progress = Progress(f"W8 {size} members: sends", o.w8_messages)
    issued = 0

    async def sender() -> None:
        nonlocal issued
        while issued < o.w8_messages:
            issued += 1
            group_id, members = await idle.get()
            n = len(sent[group_id])
            who = members[n % len(members)]
            began = time.perf_counter()
            reply = await api.group_send(who, group_id, f"{group_id}#{n}", f"c{n}")
            send_latencies.append(time.perf_counter() - began)
            sent_at[reply["message"]["id"]] = began
            sent[group_id].append(reply["message"]["id"])
            idle.put_nowait((group_id, members))
            progress.step()

    began = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(o.w8_clients)))
    wall = time.perf_counter() - began
    stop.set()
    await asyncio.gather(*pollers)
    total = sum(len(ids) for ids in sent.values())
    deliveries = sum(
        len(ids) * len(members) for (group_id, members), ids in ((g, sent[g[0]]) for g in groups)
    )

    async def verify(group_id: str, member: BenchDevice) -> int:
        entries, _, _ = await api.drain(member, since=0)
        label = f"W8 {member.user_id}"
        verify_gap_free(label, [e["version"] for e in entries], 0)
        got = [e["data"]["id"] for e in entries if e["kind"] == "message"]
        if got != sent[group_id]:
            raise VerificationError(f"{label}: {len(got)} messages, expected {len(sent[group_id])}")
        seqs = [e["data"]["seq"] for e in entries if e["kind"] == "message"]
        if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
            raise VerificationError(f"{label}: messages out of seq order")
        return len(got)

    jobs = [lambda g=g, m=m: verify(g, m) for g, members in groups for m in members]
    verified = sum(await bounded(o.setup_concurrency, jobs))
    if verified != deliveries:
        raise VerificationError(f"W8 {size}: verified {verified} of {deliveries} deliveries")
    return {
        "members": size,
        "groups": len(groups),
        "sends": total,
        "sends_per_s": round(total / wall, 1),
        "deliveries_per_s": round(deliveries / wall, 1),
        "send_latency": summarize(send_latencies),
        "wake_latency": summarize(wake_latencies),
        "verified_deliveries": verified,
        "wall_s": round(wall, 2),
    }


async def w8(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    connections = o.w8_clients + o.w8_users + o.setup_concurrency + 8
    async with open_api(ctx.url, connections, read_timeout=60) as api:
        result: dict[str, Any] = {"sizes": [await _one_size(api, ctx, size) for size in o.w8_sizes]}
    if o.w8_large_sizes or o.w8_large_small:
        result["large"] = await w8_large(ctx)
    return result
