"""W7 offline push: a local push gateway that fails on purpose, and devices due all at once.

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

__all__ = ["NOTIFY_PATH", "BenchGateway", "gateway_url", "running_gateway", "w7"]

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


# Every device's user gets one message from one sender, all created at the same instant, so
# that every push falls due at once: the worker's throughput, not the load's pace, is
# measured. (Loaded in SQL like W6: 10,000 HTTP sign-ups would take minutes of Argon2.)
_LOAD = """
WITH sender AS (
    INSERT INTO users (user_id, password_hash, latest_version, floor_version, created_at)
    VALUES (%(prefix)s || 'sender', 'not-a-login', %(devices)s, 0, %(at)s)
), recipients AS (
    INSERT INTO users (user_id, password_hash, latest_version, floor_version, created_at)
    SELECT %(prefix)s || g, 'not-a-login', 1, 0, %(at)s FROM generate_series(1, %(devices)s) g
), devices AS (
    INSERT INTO devices (device_id, user_id, token_hash, name, acked_version, created_at,
                         last_seen_at)
    SELECT %(prefix)s || 'd' || g, %(prefix)s || g,
           sha256(convert_to(%(prefix)s || 'token' || g, 'UTF8')), 'bench', 0, %(at)s, %(at)s
    FROM generate_series(1, %(devices)s) g
), messages AS (
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
                     created_at, pushed_version, synced_version, attempts)
SELECT 'bench', %(prefix)s || 'k' || g, %(prefix)s || 'd' || g, %(prefix)s || g,
       %(gateway)s, 'id_only', '{}', %(at)s, 0, 0, 0
FROM generate_series(1, %(devices)s) g
"""

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

    def __init__(self, server_pid: int | None, database_url: str) -> None:
        self._server_pid = server_pid
        self._database_url = database_url
        self._start: dict[str, dict[int, float]] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        with psycopg.connect(self._database_url) as conn:
            backends = [row[0] for row in conn.execute(_BACKENDS).fetchall()]
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


def _load(
    database_url: str, prefix: str, devices: int, gateway: str
) -> tuple[float, dict[str, str]]:
    """Load the devices; returns (the messages' creation time, {pushkey: message id})."""
    with psycopg.connect(database_url) as conn:
        at = conn.execute("SELECT clock_timestamp()").fetchone()
        assert at is not None
        params = {"prefix": prefix, "devices": devices, "gateway": gateway, "at": at[0]}
        conn.execute(_LOAD, params)
        conn.commit()
        rows = conn.execute(_MESSAGE_IDS, params).fetchall()
    return at[0].timestamp(), {prefix + key: str(message_id) for key, message_id in rows}


async def w7(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    if ctx.database_url is None or ctx.gateway_port is None:
        return {"skipped": "W7 loads its devices in SQL and runs its own gateway: needs --pg"}
    prefix = f"b{ctx.run_id}-w7-{secrets.token_hex(2)}-"
    async with running_gateway(ctx.gateway_port, o.w7_fail_rate) as gateway:
        created_at, expected = await asyncio.to_thread(
            _load, ctx.database_url, prefix, o.w7_devices, gateway_url(ctx.gateway_port)
        )
        meter = CpuMeter(ctx.server_pid, ctx.database_url)
        await meter.start()
        due = created_at + o.push_delay
        gateway.all_arrived.clear()
        gateway.awaited = set(expected) - gateway.accepted.keys()
        if not gateway.awaited:
            gateway.all_arrived.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(o.push_delay + o.w7_timeout):
                await gateway.all_arrived.wait()
        cpu = await meter.stop()
        # A moment more for pushes that would come twice (a lease lost, a retry of an
        # accepted push): they would follow the first within a round or two.
        await asyncio.sleep(1.0)
    mine = {k: v for k, v in gateway.accepted.items() if k in expected}
    lost = len(expected) - len(mine)
    duplicates = sum(len(v) - 1 for v in mine.values())
    wrong = sum(1 for k, v in mine.items() if v[0][1] != expected[k])
    firsts = [v[0][0] for v in mine.values()]
    if not firsts:
        raise BenchError("W7: the gateway received no push at all")
    span = max(firsts) - due
    result = {
        "devices": o.w7_devices,
        "fail_rate": o.w7_fail_rate,
        "push_delay_s": o.push_delay,
        "delivered": len(mine),
        "lost": lost,
        "duplicates": duplicates,
        "wrong_event": wrong,
        "gateway_requests": gateway.requests,
        "gateway_failures_injected": gateway.failed,
        "pushes_per_s": round(len(mine) / span, 1) if span > 0 else None,
        "lag_after_delay": summarize([max(0.0, t - due) for t in firsts]),
        "cpu_s": cpu,
        "cpu_ms_per_push": {
            role: round(1000 * seconds / len(mine), 3) if seconds is not None else None
            for role, seconds in cpu.items()
        },
    }
    if lost or wrong:
        raise BenchError(f"W7: {lost} pushes lost, {wrong} for the wrong message: {result}")
    return result
