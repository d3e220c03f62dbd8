"""W7 offline push: a local push gateway that fails on purpose, and two figures.

Burst: every device's push falls due at the same instant; how many pushes per second the
server delivers (its capacity). Open loop: messages arrive at an offered rate (--w7-rate),
each push falls due at its own time; the lag of each push after its due time, which is what
a user notices. Both count pushes lost (any fails the run) and duplicates.

The gateway runs in the bench's own event loop: a bare asyncio HTTP/1.1 server (keep-alive,
Content-Length bodies, which is what msgsync sends), so that it costs the shared machine
little. It answers a random share of requests with 500 and records each accepted push.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from app.bench.context import Context
from app.bench.server import process_cpu_seconds, server_pids
from app.bench.stats import BenchError, summarize
from app.push.pushers import push_interval

__all__ = [
    "NOTIFY_PATH",
    "BenchGateway",
    "CpuMeter",
    "cpu_per_operation",
    "gateway_url",
    "running_gateway",
    "w7",
]

NOTIFY_PATH = "/_matrix/push/v1/notify"


@dataclass
class BenchGateway:
    fail_rate: float
    accepted: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    failed: int = 0
    requests: int = 0
    seed: int = 7

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self.writers: set[asyncio.StreamWriter] = set()
        self.awaited: set[str] = set()
        self.all_arrived = asyncio.Event()

    def answer(self, body: bytes) -> int:
        """Record a notify request; the status to answer."""
        self.requests += 1
        if self._random.random() < self.fail_rate:
            self.failed += 1
            return 500
        notification = orjson.loads(body)["notification"]
        now = time.time()
        for device in notification["devices"]:
            self.accepted.setdefault(device["pushkey"], []).append((now, notification["event_id"]))
            self.awaited.discard(device["pushkey"])
        if not self.awaited:
            self.all_arrived.set()
        return 200

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                status = self.answer(await reader.readexactly(length))
                payload = b'{"rejected":[]}' if status == 200 else b'{"error":"injected"}'
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (status, len(payload), payload)
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


@asynccontextmanager
async def running_gateway(port: int, fail_rate: float) -> AsyncIterator[BenchGateway]:
    gateway = BenchGateway(fail_rate)
    server = await asyncio.start_server(gateway.serve, "127.0.0.1", port, backlog=1024)
    try:
        yield gateway
    finally:
        server.close()
        # Close the open connections and let their handlers see it and end.
        for writer in list(gateway.writers):
            writer.close()
        while gateway.writers:  # noqa: ASYNC110 (a handful of handlers, ending now)
            await asyncio.sleep(0.01)


def gateway_url(port: int) -> str:
    return f"http://127.0.0.1:{port}{NOTIFY_PATH}"


# The sender, the recipients (their latest version as given) and one device each: the
# start of both loaders below.
_PEOPLE = """
WITH sender AS (
    INSERT INTO users (user_id, password_hash, latest_version, floor_version, created_at)
    VALUES (%(prefix)s || 'sender', 'not-a-login', %(devices)s, 0, %(at)s)
), recipients AS (
    INSERT INTO users (user_id, password_hash, latest_version, floor_version, created_at)
    SELECT %(prefix)s || g, 'not-a-login', %(recipient_version)s, 0, %(at)s
    FROM generate_series(1, %(devices)s) g
), devices AS (
    INSERT INTO devices (device_id, user_id, token_hash, name, acked_version, created_at,
                         last_seen_at)
    SELECT %(prefix)s || 'd' || g, %(prefix)s || g,
           sha256(convert_to(%(prefix)s || 'token' || g, 'UTF8')), 'bench', 0, %(at)s, %(at)s
    FROM generate_series(1, %(devices)s) g
)"""

# Every device's user gets one message from one sender, all created at the same instant, so
# that every push falls due at once: the worker's throughput, not the load's pace, is
# measured. (Loaded in SQL like W6: 10,000 HTTP sign-ups would take minutes of Argon2.)
_LOAD = (
    _PEOPLE
    + """, messages AS (
    INSERT INTO messages (sender, recipient, pair_lo, pair_hi, body, client_msg_id,
                          sender_version, recipient_version, created_at)
    SELECT %(prefix)s || 'sender', %(prefix)s || g,
           least(%(prefix)s || 'sender', %(prefix)s || g),
           greatest(%(prefix)s || 'sender', %(prefix)s || g),
           'w7 #' || g, 'c' || g, g, 1, %(at)s
    FROM generate_series(1, %(devices)s) g
    RETURNING id, recipient
), inbox AS (
    INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
    SELECT recipient, 1, 'message', %(at)s, id, '{"id":' || id || '}' FROM messages
)
INSERT INTO pushers (app_id, pushkey, device_id, user_id, gateway_url, format, data,
                     created_at, pushed_version, synced_version, attempts, due_at)
-- due_at: what the send would have set (app.inbox.sync), push_wait after the message.
SELECT 'bench', %(prefix)s || 'k' || g, %(prefix)s || 'd' || g, %(prefix)s || g,
       %(gateway)s, 'id_only', '{}', %(at)s, 0, 0, 0, %(at)s + %(wait)s * interval '1 second'
FROM generate_series(1, %(devices)s) g
"""
)

_MESSAGE_IDS = """
SELECT 'k' || substr(recipient, length(%(prefix)s) + 1), id FROM messages
WHERE sender = %(prefix)s || 'sender'
"""


_BACKENDS = """
SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


class CpuMeter:
    """CPU seconds spent by the server's processes and by the PostgreSQL backends serving its
    database (when PostgreSQL runs on this machine), between start() and stop()."""

    def __init__(
        self, server_pid: int | None, database_url: str, exclude: set[int] | None = None
    ) -> None:
        self._server_pid = server_pid
        self._database_url = database_url
        self._exclude = exclude or set()
        self._start: dict[str, dict[int, float]] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        with psycopg.connect(self._database_url) as conn:
            backends = [row[0] for row in conn.execute(_BACKENDS).fetchall()]
        backends = [pid for pid in backends if pid not in self._exclude]
        found: dict[str, dict[int, float]] = {"server": {}, "database": {}}
        for role, pids in (("server", server_pids(self._server_pid)), ("database", backends)):
            for pid in pids:
                seconds = process_cpu_seconds([pid])
                if seconds is not None:
                    found[role][pid] = seconds
        return found

    async def start(self) -> None:
        self._start = await asyncio.to_thread(self._sample)

    async def stop(self) -> dict[str, float | None]:
        end = await asyncio.to_thread(self._sample)
        spent: dict[str, float | None] = {}
        for role, pids in end.items():
            # A process born during the run counts from zero; one that ended is not seen.
            before = self._start.get(role, {})
            spent[role] = (
                round(sum(s - before.get(pid, 0.0) for pid, s in pids.items()), 3) if pids else None
            )
        return spent


@asynccontextmanager
async def cpu_per_operation(
    ctx: Context, per: dict[str, float], operations: int, scale: float, digits: int
) -> AsyncIterator[None]:
    """CPU per operation of the server and of its database's backends during the block,
    filled into `per` by role at its end: seconds / operations * scale (1000: ms; 10^6:
    µs). With --pg only: against --url, `per` stays empty."""
    if ctx.database_url is None:
        yield
        return
    meter = CpuMeter(ctx.server_pid, ctx.database_url)
    await meter.start()
    yield
    for role, seconds in (await meter.stop()).items():
        if seconds is not None:
            per[role] = round(scale * seconds / operations, digits)


def push_wait(delay: float) -> float:
    """What the server's sends use (app.push.pushers.push_wait) for this delay."""
    return delay + push_interval(delay)


def _load(
    database_url: str, prefix: str, devices: int, gateway: str, wait: float
) -> tuple[float, dict[str, str]]:
    """Load the devices; returns (the messages' creation time, {pushkey: message id})."""
    with psycopg.connect(database_url) as conn:
        at = conn.execute("SELECT clock_timestamp()").fetchone()
        assert at is not None
        params = {
            "prefix": prefix,
            "devices": devices,
            "gateway": gateway,
            "at": at[0],
            "wait": wait,
            "recipient_version": 1,  # each has its one message
        }
        conn.execute(_LOAD, params)
        conn.commit()
        rows = conn.execute(_MESSAGE_IDS, params).fetchall()
    return at[0].timestamp(), {prefix + key: str(message_id) for key, message_id in rows}


# Open loop: the users, devices and pushers first, idle; then the messages arrive in small
# batches at the offered rate, each batch written as the send writes it (app.inbox.sync): the
# recipients' versions, the message, its inbox entry, the pushers marked due.
_LOAD_IDLE = (
    _PEOPLE
    + """
INSERT INTO pushers (app_id, pushkey, device_id, user_id, gateway_url, format, data,
                     created_at, pushed_version, synced_version, attempts)
SELECT 'bench', %(prefix)s || 'k' || g, %(prefix)s || 'd' || g, %(prefix)s || g,
       %(gateway)s, 'id_only', '{}', %(at)s, 0, 0, 0
FROM generate_series(1, %(devices)s) g
"""
)

_ARRIVE = """
WITH stamp AS (SELECT clock_timestamp() AS at
), bumped AS (
    UPDATE users SET latest_version = 1
    WHERE user_id IN (
        SELECT %(prefix)s || g
        FROM generate_series(CAST(%(lo)s AS integer), CAST(%(hi)s AS integer)) g
    )
    RETURNING user_id
), messages AS (
    INSERT INTO messages (sender, recipient, pair_lo, pair_hi, body, client_msg_id,
                          sender_version, recipient_version, created_at)
    SELECT %(prefix)s || 'sender', b.user_id, least(%(prefix)s || 'sender', b.user_id),
           greatest(%(prefix)s || 'sender', b.user_id), 'w7', 'c' || b.user_id,
           substr(b.user_id, length(%(prefix)s) + 1)::bigint, 1, stamp.at
    FROM bumped AS b, stamp
    RETURNING id, recipient, created_at
), inbox AS (
    INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
    SELECT recipient, 1, 'message', created_at, id, '{"id":' || id || '}' FROM messages
), marked AS (
    UPDATE pushers SET due_at = stamp.at + %(wait)s * interval '1 second'
    FROM stamp
    WHERE pushers.user_id IN (SELECT recipient FROM messages)
)
SELECT 'k' || substr(recipient, length(%(prefix)s) + 1), id, extract(epoch FROM created_at)
FROM messages
"""


@dataclass
class _Run:
    """One W7 figure's bookkeeping: what each pushkey should carry and when it fell due."""

    expected: dict[str, str] = field(default_factory=dict)  # pushkey -> message id
    due: dict[str, float] = field(default_factory=dict)  # pushkey -> created_at + delay


async def _await_pushes(
    gateway: BenchGateway, timeout: float, meter: CpuMeter
) -> dict[str, float | None]:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await gateway.all_arrived.wait()
    cpu = await meter.stop()
    # A moment more for pushes that would come twice (a lease lost, a retry of an
    # accepted push): they would follow the first within a round or two.
    await asyncio.sleep(1.0)
    return cpu


def _expect(gateway: BenchGateway, pushkeys: set[str]) -> None:
    gateway.awaited |= pushkeys - gateway.accepted.keys()
    if gateway.awaited:
        gateway.all_arrived.clear()


def _figures(
    gateway: BenchGateway, run: _Run, cpu: dict[str, float | None], label: str
) -> dict[str, Any]:
    mine = {k: v for k, v in gateway.accepted.items() if k in run.expected}
    lost = len(run.expected) - len(mine)
    duplicates = sum(len(v) - 1 for v in mine.values())
    wrong = sum(1 for k, v in mine.items() if v[0][1] != run.expected[k])
    if not mine:
        raise BenchError(f"W7 {label}: the gateway received no push at all")
    firsts = {k: v[0][0] for k, v in mine.items()}
    start = min(run.due.values())
    # The rate until 99% had arrived: the last few pushes are those that failed 5 or 6
    # times in a row (20% each time) and waited their growing backoff, seconds apart.
    arrivals = sorted(firsts.values())
    at99 = arrivals[max(0, int(len(arrivals) * 0.99) - 1)]
    result = {
        "delivered": len(mine),
        "lost": lost,
        "duplicates": duplicates,
        "wrong_event": wrong,
        "pushes_per_s": round(len(arrivals) * 0.99 / (at99 - start), 1) if at99 > start else None,
        "last_push_after_s": round(arrivals[-1] - start, 3),
        "lag_after_due": summarize([max(0.0, t - run.due[k]) for k, t in firsts.items()]),
        "cpu_s": cpu,
        "cpu_ms_per_push": {
            role: round(1000 * seconds / len(mine), 3) if seconds is not None else None
            for role, seconds in cpu.items()
        },
    }
    if lost or wrong:
        raise BenchError(f"W7 {label}: {lost} pushes lost, {wrong} for the wrong message: {result}")
    return result


async def _burst(ctx: Context, gateway: BenchGateway) -> dict[str, Any]:
    """Every push due at the same instant: the capacity, in pushes per second."""
    o = ctx.options
    assert ctx.database_url is not None
    assert ctx.gateway_port is not None
    prefix = f"b{ctx.run_id}-w7-{secrets.token_hex(2)}-"
    created_at, expected = await asyncio.to_thread(
        _load,
        ctx.database_url,
        prefix,
        o.w7_devices,
        gateway_url(ctx.gateway_port),
        push_wait(o.push_delay),
    )
    run = _Run(expected, dict.fromkeys(expected, created_at + o.push_delay))
    meter = CpuMeter(ctx.server_pid, ctx.database_url)
    await meter.start()
    _expect(gateway, set(expected))
    cpu = await _await_pushes(gateway, o.push_delay + o.w7_timeout, meter)
    return _figures(gateway, run, cpu, "burst")


async def _open_loop(ctx: Context, gateway: BenchGateway) -> dict[str, Any]:
    """Messages arrive at the offered rate: the lag of each push after its own due time."""
    o = ctx.options
    assert ctx.database_url is not None
    assert ctx.gateway_port is not None
    prefix = f"b{ctx.run_id}-w7o-{secrets.token_hex(2)}-"
    run = _Run()
    async with await psycopg.AsyncConnection.connect(ctx.database_url, autocommit=True) as conn:
        params: dict[str, Any] = {
            "prefix": prefix,
            "devices": o.w7_devices,
            "gateway": gateway_url(ctx.gateway_port),
            "wait": push_wait(o.push_delay),
        }
        async with conn.transaction():
            cursor = await conn.execute("SELECT clock_timestamp()")
            row = await cursor.fetchone()
            assert row is not None
            # No message yet: each arrives later (_ARRIVE).
            await conn.execute(_LOAD_IDLE, {**params, "at": row[0], "recipient_version": 0})
        meter = CpuMeter(ctx.server_pid, ctx.database_url, exclude={conn.info.backend_pid})
        await meter.start()
        _expect(gateway, {f"{prefix}k{g}" for g in range(1, o.w7_devices + 1)})
        loop = asyncio.get_running_loop()
        began, sent = loop.time(), 0
        while sent < o.w7_devices:
            # Open loop: the schedule says how many should have arrived by now.
            target = min(o.w7_devices, int((loop.time() - began) * o.w7_rate) + 1)
            if target > sent:
                cursor = await conn.execute(_ARRIVE, {**params, "lo": sent + 1, "hi": target})
                for key, message_id, created in await cursor.fetchall():
                    run.expected[prefix + key] = str(message_id)
                    run.due[prefix + key] = float(created) + o.push_delay
                sent = target
            await asyncio.sleep(0.005)
        offered_s = loop.time() - began
    cpu = await _await_pushes(gateway, o.push_delay + o.w7_timeout, meter)
    result = _figures(gateway, run, cpu, "open loop")
    return {
        "offered_per_s": o.w7_rate,
        "arrived_per_s": round(o.w7_devices / offered_s, 1) if offered_s > 0 else None,
        **result,
    }


async def w7(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    if ctx.database_url is None or ctx.gateway_port is None:
        return {"skipped": "W7 loads its devices in SQL and runs its own gateway: needs --pg"}
    result: dict[str, Any] = {
        "devices": o.w7_devices,
        "fail_rate": o.w7_fail_rate,
        "push_delay_s": o.push_delay,
    }
    async with running_gateway(ctx.gateway_port, o.w7_fail_rate) as gateway:
        result["burst"] = await _burst(ctx, gateway)
        if o.w7_rate > 0:
            result["open_loop"] = await _open_loop(ctx, gateway)
    result["gateway_requests"] = gateway.requests
    result["gateway_failures_injected"] = gateway.failed
    return result
