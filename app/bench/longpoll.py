"""W3 wake latency and W4 idle long-polls."""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from typing import Any

import httpx

from app.bench.client import Api, BenchDevice, Progress, open_api
from app.bench.context import Context
from app.bench.server import server_rss_kib
from app.bench.stats import BenchError, VerificationError, summarize

__all__ = ["raise_fd_limit", "w3", "w4"]

# A long-poll that has not answered this long after it was sent is taken to be parked on
# the server; W3 checks that it is still pending before every send.
PARK_DELAY = 0.02


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: W4 holds one socket per idle device."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _poll(api: Api, device: BenchDevice, since: int, timeout: float) -> tuple[Any, float]:
    page, _ = await api.sync(device, since=since, timeout=timeout)
    return page, time.perf_counter()


def _only_entry(label: str, page: Any, message: Any, version: int) -> None:
    entries = page["entries"]
    if len(entries) != 1 or entries[0]["data"]["id"] != message["id"]:
        got = [(e["version"], e["data"].get("id")) for e in entries]
        raise VerificationError(f"{label}: expected message {message['id']} only, got {got}")
    if entries[0]["version"] != version:
        raise VerificationError(f"{label}: version {entries[0]['version']}, expected {version}")


async def w3(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    async with open_api(ctx.url, 8, read_timeout=o.w3_timeout + 15) as api:
        ids = ctx.user_ids("w3", "r", 1) + ctx.user_ids("w3", "s", 1)
        device, sender = await api.create_devices(ids, 2, "W3")
        progress = Progress("W3 rounds", o.w3_rounds)
        latencies: list[float] = []
        for round_ in range(o.w3_rounds):
            # Each round adds one version: the device waits above the previous round's.
            poll = asyncio.create_task(_poll(api, device, round_, o.w3_timeout))
            await asyncio.sleep(PARK_DELAY)
            if poll.done():
                page, _ = poll.result()
                raise BenchError(
                    "W3: GET /sync?timeout answered at once with "
                    f"{len(page['entries'])} entries: the server does not hold long-polls"
                )
            began = time.perf_counter()
            reply = await api.send(sender, device.user_id, f"wake {round_}", f"c{round_}")
            page, returned = await poll
            _only_entry(f"W3 round {round_}", page, reply["message"], round_ + 1)
            latencies.append(returned - began)
            progress.step()
    return {"rounds": o.w3_rounds, "wake_latency": summarize(latencies)}


async def _waiting(url: str) -> int | None:
    """The server's msgsync_waiting_long_polls (/metrics), from one process, or None."""
    try:
        # A fresh connection each time: a kept-alive one would always ask the same worker.
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            response = await client.get("/metrics")
    except httpx.HTTPError:
        return None
    for line in response.text.splitlines() if response.status_code == 200 else ():
        if line.startswith("msgsync_waiting_long_polls "):
            return int(float(line.split()[1]))
    return None


async def _parked(ctx: Context, count: int, settle: float) -> str:
    """Wait for `count` long-polls to park; says how that was established.

    /metrics counts the waiters of the process that answers it: with one process it reaches
    `count`; with several it never does, and the fixed settle time is all there is.
    """
    deadline = time.monotonic() + settle
    seen = None
    while time.monotonic() < deadline:
        seen = await _waiting(ctx.url)
        if seen is not None and seen >= count:
            return f"server reported {seen} waiting long-polls"
        await asyncio.sleep(0.1)
    return f"fixed settle time of {settle:g} s (waiters reported by one process: {seen})"


async def w4(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    k = o.idle
    fd_limit = raise_fd_limit()
    if fd_limit < k + o.w4_senders + 64:
        raise BenchError(f"W4: {k} idle connections need more than the fd limit {fd_limit}")
    connections = k + o.w4_senders + 8
    async with open_api(ctx.url, connections, read_timeout=o.w4_timeout + 30) as api:
        ids = ctx.user_ids("w4", "r", k) + ctx.user_ids("w4", "s", o.w4_senders)
        devices = await api.create_devices(ids, o.setup_concurrency, "W4")
        waiting, senders = devices[:k], devices[k:]
        print(f"  W4: starting {k} long-polls", file=sys.stderr)
        polls = [asyncio.create_task(_poll(api, d, 0, o.w4_timeout)) for d in waiting]
        settle = o.w4_settle if o.w4_settle is not None else 5 + k / 500
        how_parked = await _parked(ctx, k, settle)
        early = sum(p.done() for p in polls)
        rss = server_rss_kib(ctx.server_pid)
        progress = Progress("W4 sent", k)
        sent_at: list[float] = [0.0] * k
        messages: list[Any] = [None] * k

        async def send_from(index: int, sender: BenchDevice) -> None:
            for i in range(index, k, len(senders)):
                sent_at[i] = time.perf_counter()
                reply = await api.send(sender, waiting[i].user_id, f"wake {i}", f"c{i}")
                messages[i] = reply["message"]
                progress.step()

        await asyncio.gather(*(send_from(i, s) for i, s in enumerate(senders)))
        results = await asyncio.gather(*polls)
        latencies, late = [], 0
        for i, (page, returned) in enumerate(results):
            if page["entries"]:
                _only_entry(f"W4 device {i}", page, messages[i], 1)
                latencies.append(returned - sent_at[i])
            else:
                late += 1  # timed out or answered early: the message must still be stored
                entries, _, _ = await api.drain(waiting[i], since=0)
                _only_entry(f"W4 device {i} (after the poll)", {"entries": entries}, messages[i], 1)
    woken = sum(latency <= o.w4_window for latency in latencies)
    rss_total = sum(rss.values()) if rss else None
    return {
        "idle": k,
        "parked_by": how_parked,
        "answered_before_send": early,
        "woken_within_window": woken,
        "window_s": o.w4_window,
        "returned_without_message": late,
        "wake_latency": summarize(latencies),
        "server_rss_mib": round(rss_total / 1024, 1) if rss_total is not None else None,
        "server_rss_kib_by_pid": rss,
        "verified_messages": k,
    }
