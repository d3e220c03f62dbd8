"""W8 large sizes: one group per size, its members loaded in SQL, some of them online.

Per size (`w8_large_sizes`, and `w8_large_small`, a fanned-out group to compare): one
group of that many members, loaded in SQL as W7 loads its pushers (100,000 sign-ups through
HTTP would measure Argon2 and the member API, not the sends). `w8_pollers` members are
online, caught up to the group's creation: each long-polls its stream and follows the group
exactly as docs/client-algorithm.md tells a client: on each `group_news` entry it reads the
log from its own last seq until `has_more` is false; in a small group the messages come as
entries. A member of a large group who is not online holds a `group_news`
entry no read has covered (as one who has not read since does: later sends write it
nothing). Then `w8_large_senders` concurrent members send `w8_large_messages` messages into
the group.

A request answered 503 (`database_unavailable`: the server's pool had no connection free
in time) is retried after a short pause, as a client does, and counted: sends carry a
client_msg_id, so a retried send is stored once. So is a request left unanswered past the
client's read timeout (60 s). Figures: send latency, sends/s into the one
group, the time from the start of a send until
the last online member has read it, the database rows written per send (inserted, updated
and deleted rows of every table, from pg_stat_user_tables, over the sends and the reads
they cause, divided by the sends), and lost and duplicated messages over all online members:
both must be 0, or the run fails.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from app.bench.client import Api, BenchDevice, Progress, open_api
from app.bench.context import Context
from app.bench.stats import BenchError, VerificationError, summarize
from app.config import Settings

__all__ = ["w8_large"]

# Members m1..m<size>: the first `senders` send, the next `pollers` are online (both have a
# device each); the group was created by m1 at seq 1. The online members have read the log
# up to it (their devices' position is 1) and hold no news; in a large group every other
# member holds news of seq 1 no read has covered (its group_news entry, version 1), as one
# who has not read since does.
_LOAD = """
INSERT INTO users (user_id, password_hash, latest_version, floor_version, created_at)
SELECT %(prefix)s || 'm' || g, 'not-a-login',
       CASE WHEN %(large)s AND g > %(online_to)s THEN 1 ELSE 0 END, 0, now()
FROM generate_series(1, %(size)s) g;

INSERT INTO devices (device_id, user_id, token_hash, name, acked_version, created_at,
                     last_seen_at)
SELECT %(prefix)s || 'd' || g, %(prefix)s || 'm' || g,
       sha256(convert_to(%(prefix)s || 'token' || g, 'UTF8')), 'bench', 0, now(), now()
FROM generate_series(1, %(devices)s) g;

INSERT INTO groups (group_id, title, owner, creator, client_group_id, latest_seq,
                    member_count, large, last_message_id, created_at)
VALUES (%(prefix)s || 'g', 'W8 ' || %(size)s, %(prefix)s || 'm1', %(prefix)s || 'm1', NULL, 1,
        %(size)s, %(large)s, NULL, now());

INSERT INTO group_events (group_id, seq, kind, actor, created_at, message_id, data)
VALUES (%(prefix)s || 'g', 1, 'created', %(prefix)s || 'm1', now(), NULL,
        '{"title": "W8", "members": []}');

INSERT INTO group_members (group_id, user_id, role, joined_seq, read_seq, news_seq,
                           last_message_id)
SELECT %(prefix)s || 'g', %(prefix)s || 'm' || g,
       CASE WHEN g = 1 THEN 'owner' ELSE 'member' END, 1, 1,
       CASE WHEN %(large)s AND g > %(online_to)s THEN 1 END,
       CASE WHEN NOT %(large)s THEN 0 END
FROM generate_series(1, %(size)s) g;

INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
SELECT %(prefix)s || 'm' || g, 1, 'group_news', now(), NULL,
       '{"group_id":"' || %(prefix)s || 'g","seq":1}'
FROM generate_series(%(online_to)s + 1, %(size)s) g
WHERE %(large)s
"""

_WRITES = """
SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables
UNION ALL
SELECT '', xact_commit, 0, 0 FROM pg_stat_database WHERE datname = current_database()
"""


def _load(database_url: str, prefix: str, size: int, devices: int, large: bool) -> None:
    params = {
        "prefix": prefix,
        "size": size,
        "devices": devices,
        "online_to": devices,
        "large": large,
    }
    with psycopg.connect(database_url) as conn:
        for statement in _LOAD.split(";\n"):
            if statement.strip():
                conn.execute(statement, params)
        conn.commit()
        conn.execute("ANALYZE")


def _writes(database_url: str) -> dict[str, tuple[int, int, int]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return {r[0]: (r[1], r[2], r[3]) for r in conn.execute(_WRITES).fetchall()}


@dataclass
class _Poller:
    """An online member's device, following the group as docs/client-algorithm.md tells a
    client: a `group_news` entry (or a group event that cannot be applied in place) makes a
    read due; after each stream page, while one is due, the log is read from the position
    until has_more is false, each event above the position applied once, in seq order."""

    api: Api
    device: BenchDevice
    group_id: str
    since: int = 0
    position: int = 1  # the group's seq applied up to: its creation, read before the run
    news_seq: int = 0  # above the position: a read is due
    seen: list[int] = field(default_factory=list)  # message ids, in the order applied
    seen_at: dict[int, float] = field(default_factory=dict)
    duplicated: int = 0
    log_reads: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def _apply(self, seq: int, message_id: int | None, at: float) -> None:
        if seq <= self.position:
            self.duplicated += 1  # answered again below the position: never applied twice
            return
        self.position = seq
        if message_id is None:
            return
        if message_id in self.seen_at:
            self.duplicated += 1
            return
        self.seen.append(message_id)
        self.seen_at[message_id] = at
        self.progress.set()

    def _from_stream(self, seq: int, message_id: int, at: float) -> None:
        if seq <= self.position:
            return  # applied already, from the log
        if seq == self.position + 1 and self.news_seq <= self.position:
            self._apply(seq, message_id, at)
        else:  # a gap or a read due: the log read applies it in its turn
            self.news_seq = max(self.news_seq, seq, self.position + 1)

    async def read_log(self) -> None:
        while True:
            page = await self.api.group_events(self.device, self.group_id, self.position, 1000)
            self.log_reads += 1
            at = time.perf_counter()
            for event in page["events"]:
                message = event["data"] if event["kind"] == "message" else None
                self._apply(event["seq"], message["id"] if message else None, at)
            self.position = max(self.position, page["next_after_seq"])
            if not page["has_more"]:
                self.news_seq = min(self.news_seq, self.position)  # covered
                return
            self.news_seq = max(self.news_seq, page["latest_seq"], self.position + 1)

    async def step(self, timeout: float) -> None:
        """One page of the stream (a long-poll when caught up), then the log if news."""
        page, _ = await self.api.sync(self.device, since=self.since, timeout=timeout, limit=1000)
        at = time.perf_counter()
        for entry in page["entries"]:
            data = entry["data"]
            if entry["kind"] == "group_news" and data["group_id"] == self.group_id:
                self.news_seq = max(self.news_seq, data["seq"], self.position + 1)
            elif entry["kind"] == "message" and data.get("group_id") == self.group_id:
                self._from_stream(data["seq"], data["id"], at)
        self.since = page["next_since"]
        if self.news_seq > self.position:
            await self.read_log()

    async def follow(self, stop: asyncio.Event, timeout: float) -> None:
        while not stop.is_set():
            await self.step(timeout)


async def _one(ctx: Context, api: Api, size: int, large: bool) -> dict[str, Any]:
    o = ctx.options
    assert ctx.database_url is not None
    prefix = f"b{ctx.run_id}-w8l{size}-{secrets.token_hex(2)}-"
    senders = min(o.w8_large_senders, size)
    pollers = min(o.w8_pollers, size - senders)
    began = time.perf_counter()
    await asyncio.to_thread(_load, ctx.database_url, prefix, size, senders + pollers, large)
    load_s = time.perf_counter() - began
    devices = [
        BenchDevice(f"{prefix}m{g}", f"{prefix}d{g}", f"{prefix}token{g}")
        for g in range(1, senders + pollers + 1)
    ]
    group_id = f"{prefix}g"
    online = [_Poller(api, d, group_id) for d in devices[senders:]]
    # Caught up first: every online member reads its stream (and the log, had it news).
    await asyncio.gather(*(p.step(0) for p in online))
    stop = asyncio.Event()
    timeout = 20.0
    tasks = [asyncio.create_task(p.follow(stop, timeout)) for p in online]
    try:
        await asyncio.sleep(0.5 + pollers / 1000)  # the long-polls park before the first send
        await asyncio.sleep(o.w8_stats_wait)  # earlier writes' statistics reach the database
        before = await asyncio.to_thread(_writes, ctx.database_url)
        sent: list[tuple[int, int]] = []  # (seq, message id)
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        progress = Progress(f"W8 {size} members: sends", o.w8_large_messages)
        issued = 0

        async def sender(who: BenchDevice) -> None:
            nonlocal issued
            while issued < o.w8_large_messages:
                issued += 1
                n = issued
                start = time.perf_counter()
                reply = await api.group_send(who, group_id, f"{size}#{n}", f"w8l-{n}")
                latencies.append(time.perf_counter() - start)
                message = reply["message"]
                sent.append((message["seq"], message["id"]))
                sent_at[message["id"]] = start
                progress.step()

        start = time.perf_counter()
        await asyncio.gather(*(sender(d) for d in devices[:senders]))
        wall = time.perf_counter() - start
        total = len(sent)
        # Until every online member has read every message, or the patience runs out.
        deadline = time.perf_counter() + o.w8_large_timeout
        for p in online:
            while len(p.seen) < total and time.perf_counter() < deadline:
                p.progress.clear()
                if len(p.seen) >= total:
                    break
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                        await p.progress.wait()
                except TimeoutError:
                    break
        await asyncio.sleep(o.w8_stats_wait)
        after = await asyncio.to_thread(_writes, ctx.database_url)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    failures = [r for r in failures if not isinstance(r, asyncio.CancelledError)]
    if failures:
        raise BenchError(f"W8 {size} members: a follower failed: {failures[0]!r}")

    expected = [message_id for _, message_id in sorted(sent)]
    lost = duplicated = out_of_order = 0
    for p in online:
        duplicated += p.duplicated + sum(n - 1 for n in Counter(p.seen).values() if n > 1)
        lost += len(set(expected) - set(p.seen))
        if [m for m in p.seen if m in sent_at] != expected[: len(p.seen)]:
            out_of_order += 1
    everyone_read = [
        max(p.seen_at[m] for p in online) - sent_at[m]
        for m in expected
        if online and all(m in p.seen_at for p in online)
    ]
    # The database's committed transactions ('' in the snapshots), the bench's few included.
    commits = after.pop("", (0, 0, 0))[0] - before.pop("", (0, 0, 0))[0]
    tables = {}
    for name, (ins, upd, dele) in after.items():
        b = before.get(name, (0, 0, 0))
        delta = (ins - b[0], upd - b[1], dele - b[2])
        if any(delta):
            tables[name] = {"inserted": delta[0], "updated": delta[1], "deleted": delta[2]}
    rows = sum(sum(t.values()) for t in tables.values())
    result = {
        "members": size,
        "large": large,
        "online": len(online),
        "senders": senders,
        "sends": total,
        "sends_per_s": round(total / wall, 1) if wall > 0 else None,
        "send_latency": summarize(latencies),
        "everyone_read": summarize(everyone_read),
        "rows_per_send": round(rows / total, 2) if total else None,
        "rows_by_table": tables,
        "transactions_per_send": round(commits / total, 2) if total else None,
        "log_reads": sum(p.log_reads for p in online),
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order_members": out_of_order,
        "load_s": round(load_s, 2),
        "wall_s": round(wall, 2),
    }
    if lost or duplicated or out_of_order:
        raise VerificationError(
            f"W8 {size} members: {lost} lost, {duplicated} duplicated, {out_of_order} members "
            f"out of order over {len(online)} online members: {result}"
        )
    return result


async def w8_large(ctx: Context) -> dict[str, Any] | list[dict[str, Any]]:
    """The large sizes and the small group to compare, each in a run of its own."""
    o = ctx.options
    if ctx.database_url is None:
        return {"skipped": "W8's large sizes load their members in SQL: run them with --pg"}
    limit = o.group_fanout_limit or Settings().group_fanout_limit
    sizes = [(size, size > limit) for size in (*o.w8_large_small, *o.w8_large_sizes)]
    connections = o.w8_pollers + o.w8_large_senders + 8
    results = []
    async with open_api(ctx.url, connections, read_timeout=60) as api:
        api.retry_unavailable = True
        for size, large in sizes:
            refused, timed_out = api.unavailable, api.timed_out
            result = await _one(ctx, api, size, large)
            results.append(
                {
                    **result,
                    "unavailable_retried": api.unavailable - refused,
                    "timed_out_retried": api.timed_out - timed_out,
                }
            )
    return results
