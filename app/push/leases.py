"""The push worker's statements: lease due pushers, read what they have not seen, settle.

PostgreSQL gets each as one statement on the driver (one round trip, like app.inbox.acks): the
Core versions cost a round 0.2-0.4 s for 100 pushers on the shared machine. SQLite, which
serves one process, runs the same units of work statement by statement.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.db.models import Device, InboxEntry, Message, Pusher, User

__all__ = [
    "LEASE",
    "Lease",
    "Pending",
    "Settle",
    "lease_and_read",
    "release",
    "settle",
]

# A lease outlives any leased push's wait and request (app.push.worker): only a dead
# process lets one expire, and another process then repeats that push after this long.
LEASE = timedelta(seconds=120)


@dataclass(slots=True)
class Lease:
    app_id: str
    pushkey: str
    user_id: str
    gateway_url: str
    format: str
    data: str
    created_at: datetime
    seen: int  # max(synced, acked): what the device has already
    floor: int  # max(pushed, seen): everything at or below needs no push
    attempts: int
    failing_since: datetime | None


@dataclass(slots=True)
class Pending:
    latest: int = 0
    unread: int = 0
    oldest_at: datetime | None = None  # the oldest message above the floor
    # (message id, sender, room), the newest above the floor; the room is the conversation
    # as the recipient names it: the peer, or the group of a group message.
    newest: tuple[int, str, str] | None = None


@dataclass(slots=True)
class Settle:
    """The new state of one leased pusher; None fields are left as they are."""

    app_id: str
    pushkey: str
    pushed_version: int | None = None
    due_at: datetime | None = None
    attempts: int = 0
    failing_since: datetime | None = None
    delete: bool = False


def release(lease: Lease, now: datetime) -> Settle:
    """Unleased, due at once, its retry state kept."""
    return Settle(lease.app_id, lease.pushkey, None, now, lease.attempts, lease.failing_since)


def _greatest(db: Database, *columns: Any) -> Any:
    # SQLite's many-argument max() is PostgreSQL's greatest().
    return func.max(*columns) if db.is_sqlite else func.greatest(*columns)


# Due pushers, leased in one statement, read from the due-time index (a send sets due_at:
# app.inbox.sync). SKIP LOCKED: another process's round is skipped, not waited for, so each push
# has one sender and rounds never queue behind each other.
_PG_LEASE = """
WITH due AS (
    SELECT p.ctid AS row, greatest(p.synced_version, d.acked_version) AS seen,
           greatest(p.pushed_version, p.synced_version, d.acked_version) AS floor
    FROM pushers AS p
    JOIN devices AS d ON d.device_id = p.device_id
    WHERE p.due_at <= %(now)s
      AND (p.leased_until IS NULL OR p.leased_until < %(now)s)
    -- The longest overdue first.
    ORDER BY p.due_at
    LIMIT %(limit)s
    FOR UPDATE OF p SKIP LOCKED
)
-- By row address (a TID scan): a join on the key made the planner scan every pusher. A row
-- that another transaction changed after this statement began is not updated, hence not
-- returned: it is simply not leased this round.
UPDATE pushers AS p SET leased_until = %(until)s
FROM due
WHERE p.ctid = due.row
RETURNING p.app_id, p.pushkey, p.user_id, p.gateway_url, p.format, p.data, p.created_at,
          due.seen, due.floor, p.attempts, p.failing_since
"""


async def _lease_sqlite(
    db: Database, now: datetime, limit: int
) -> tuple[list[Lease], datetime | None]:
    """_PG_LEASE's leases and the next due time, on SQLite (one process: no other round to
    skip)."""
    seen = _greatest(db, Pusher.synced_version, Device.acked_version)
    floor = _greatest(db, Pusher.pushed_version, Pusher.synced_version, Device.acked_version)
    query = (
        select(
            Pusher.app_id,
            Pusher.pushkey,
            Pusher.user_id,
            Pusher.gateway_url,
            Pusher.format,
            Pusher.data,
            Pusher.created_at,
            seen.label("seen"),
            floor.label("floor"),
            Pusher.attempts,
            Pusher.failing_since,
        )
        .join(Device, Device.device_id == Pusher.device_id)
        .where(
            Pusher.due_at <= now,
            or_(Pusher.leased_until.is_(None), Pusher.leased_until < now),
        )
        # The longest overdue first.
        .order_by(Pusher.due_at)
        .limit(limit)
    )
    async with db.session() as session, session.begin():
        rows = (await session.execute(query)).all()
        if rows:
            await session.execute(
                update(Pusher)
                .where(tuple_(Pusher.app_id, Pusher.pushkey).in_([(r[0], r[1]) for r in rows]))
                .values(leased_until=now + LEASE)
            )
        next_due = await session.scalar(select(func.min(Pusher.due_at)).where(Pusher.due_at > now))
    return [Lease(*row) for row in rows], next_due


# PostgreSQL: the lease and the read in one statement (one round trip a round, not two),
# in one snapshot. Rows come grouped per leased pusher, its messages in version order;
# each also carries the next due time after this round (the first entry of the due-time
# index past now), and with nothing leased a single row carries only that.
_PG_LEASE_AND_READ = (
    _PG_LEASE.replace("UPDATE pushers AS p", ", leased AS (\nUPDATE pushers AS p", 1)
    + """)
SELECT l.*, (SELECT u.latest_version FROM users AS u WHERE u.user_id = l.user_id),
       e.version, e.created_at, e.id, e.sender, e.room, n.at
FROM (SELECT min(due_at) AS at FROM pushers WHERE due_at > %(now)s) AS n
LEFT JOIN leased AS l ON true
LEFT JOIN LATERAL (
    SELECT i.version, i.created_at, m.id, m.sender, coalesce(m.group_id, m.sender) AS room
    FROM inbox AS i JOIN messages AS m ON m.id = i.message_id
    WHERE i.user_id = l.user_id AND i.version > l.seen AND i.kind = 'message'
      AND m.sender <> l.user_id
    ORDER BY i.version
) AS e ON true
ORDER BY l.app_id, l.pushkey, e.version
"""
)


async def lease_and_read(
    db: Database, now: datetime, limit: int
) -> tuple[list[tuple[Lease, Pending]], datetime | None]:
    """The due pushers leased, each with what it has not seen (the messages from others
    above what its device has, read in one snapshot, so every entry up to `latest` is
    visible: a user's versions commit in order), and the earliest due time still ahead,
    if any. The sender's own devices are never pushed for the sender's own message."""
    if db.is_sqlite:
        taken, next_due = await _lease_sqlite(db, now, limit)
        if not taken:
            return [], next_due
        try:
            unseen = await _unseen_sqlite(db, taken)
            return list(zip(taken, _fold(taken, unseen), strict=True)), next_due
        except BaseException:
            # Shutting down, or the read failed: give the leases back now rather than make
            # the next round wait for them to expire.
            with contextlib.suppress(Exception):
                await settle(db, [release(x, now) for x in taken], now)
            raise
    params = {"now": now, "limit": limit, "until": now + LEASE}
    async with db.driver() as driver:
        cursor = await driver.execute(_PG_LEASE_AND_READ, params)
        found = await cursor.fetchall()
    leases: list[Lease] = []
    rows: list[tuple[Any, ...]] = []
    for row in found:
        if row[0] is None:
            continue  # nothing leased: the row only carries the next due time
        if not leases or (leases[-1].app_id, leases[-1].pushkey) != (row[0], row[1]):
            leases.append(Lease(*row[:11]))
        rows.append((len(leases) - 1, *row[11:-1]))
    next_due = found[0][-1] if found else None
    return list(zip(leases, _fold(leases, rows), strict=True)), next_due


def _fold(leases: list[Lease], rows: list[tuple[Any, ...]]) -> list[Pending]:
    """Rows of (lease index, latest version, then one message above what the device has
    seen or NULLs), in version order per lease, into one Pending per lease."""
    found = [Pending() for _ in leases]
    for index, latest, version, created_at, message_id, sender, room in rows:
        one, leased = found[index], leases[index]
        one.latest = latest or 0  # no such user (gone): nothing to settle above 0
        if version is None or version <= leased.seen:
            continue
        one.unread += 1
        if version > leased.floor:
            if one.oldest_at is None:
                one.oldest_at = created_at
            one.newest = (message_id, sender, room)
    return found


async def _unseen_sqlite(db: Database, leases: list[Lease]) -> list[tuple[Any, ...]]:
    """_fold's rows for these leases, as _PG_LEASE_AND_READ reads them on PostgreSQL."""
    users = {x.user_id for x in leases}
    entries = (
        select(
            InboxEntry.user_id,
            InboxEntry.version,
            InboxEntry.created_at,
            Message.id,
            Message.sender,
            func.coalesce(Message.group_id, Message.sender),
        )
        .join(Message, Message.id == InboxEntry.message_id)
        .where(
            or_(
                *(
                    and_(InboxEntry.user_id == x.user_id, InboxEntry.version > x.seen)
                    for x in leases
                )
            ),
            InboxEntry.kind == "message",
            Message.sender != InboxEntry.user_id,
        )
        .order_by(InboxEntry.user_id, InboxEntry.version)
    )
    async with db.read_sessions() as session, session.begin():
        counters = await session.execute(
            select(User.user_id, User.latest_version).where(User.user_id.in_(users))
        )
        latest = {row.user_id: row.latest_version for row in counters}
        found = (await session.execute(entries)).all()
    by_user: dict[str, list[Any]] = {}
    for row in found:
        by_user.setdefault(row.user_id, []).append(row)
    rows: list[tuple[Any, ...]] = []
    for index, x in enumerate(leases):
        top = latest.get(x.user_id, 0)
        rows.append((index, top, None, None, None, None, None))
        rows.extend((index, top, *row[1:]) for row in by_user.get(x.user_id, ()))
    return rows


# A round's outcomes in one statement, rows locked in key order (no deadlock with another
# process's round). pushed_version never moves back: a replaced pusher keeps the higher.
# A message that arrived during the push (`news`, set by the send under the row's lock, so
# never lost to this statement) makes the pusher due at once rather than settled: the
# worker's read may have missed it.
_PG_SETTLE = """
WITH s AS (
    SELECT * FROM unnest(
        CAST(%(app_ids)s AS text[]), CAST(%(pushkeys)s AS text[]),
        CAST(%(pushed)s AS bigint[]), CAST(%(due)s AS timestamptz[]),
        CAST(%(attempts)s AS integer[]), CAST(%(since)s AS timestamptz[]),
        CAST(%(gone)s AS boolean[])
    ) AS s(app_id, pushkey, pushed, due, attempts, since, gone)
), locked AS (
    -- One index look-up and lock per row, in the arrays' order (sorted by key): a join
    -- made the planner scan every pusher.
    SELECT s.app_id, s.pushkey, s.pushed, s.due, s.attempts, s.since, s.gone
    FROM s CROSS JOIN LATERAL (
        SELECT 1 FROM pushers AS p
        WHERE p.app_id = s.app_id AND p.pushkey = s.pushkey
        FOR UPDATE
    ) AS p
), removed AS (
    DELETE FROM pushers AS p USING locked AS l
    WHERE l.gone AND p.app_id = l.app_id AND p.pushkey = l.pushkey
)
UPDATE pushers AS p
SET pushed_version = greatest(p.pushed_version, l.pushed),
    due_at = CASE WHEN l.due IS NULL AND p.news THEN %(now)s ELSE l.due END,
    news = false, attempts = l.attempts, failing_since = l.since, leased_until = NULL
FROM locked AS l
WHERE NOT l.gone AND p.app_id = l.app_id AND p.pushkey = l.pushkey
"""


async def settle(db: Database, settled: list[Settle], now: datetime) -> None:
    # One outcome per pusher: the last one stands.
    last = {(s.app_id, s.pushkey): s for s in settled}
    ordered = [last[key] for key in sorted(last)]
    if db.is_sqlite:
        async with db.session() as session, session.begin():
            await _settle_sqlite(session, ordered, now)
        return
    params = {
        "app_ids": [s.app_id for s in ordered],
        "pushkeys": [s.pushkey for s in ordered],
        "pushed": [-1 if s.pushed_version is None else s.pushed_version for s in ordered],
        "due": [s.due_at for s in ordered],
        "attempts": [s.attempts for s in ordered],
        "since": [s.failing_since for s in ordered],
        "gone": [s.delete for s in ordered],
        "now": now,
    }
    async with db.driver() as driver:
        await driver.execute(_PG_SETTLE, params)


async def _settle_sqlite(session: AsyncSession, settled: list[Settle], now: datetime) -> None:
    gone = [(s.app_id, s.pushkey) for s in settled if s.delete]
    if gone:
        await session.execute(delete(Pusher).where(tuple_(Pusher.app_id, Pusher.pushkey).in_(gone)))
    rows = [
        {
            "a": s.app_id,
            "k": s.pushkey,
            "p": s.pushed_version if s.pushed_version is not None else -1,
            "due": s.due_at,
            "n": s.attempts,
            "since": s.failing_since,
            "now": now,
        }
        for s in settled
        if not s.delete
    ]
    if rows:
        conn = await session.connection()
        # pushed_version never moves back: a replaced pusher keeps the higher one.
        await conn.execute(
            update(Pusher)
            .where(Pusher.app_id == bindparam("a"), Pusher.pushkey == bindparam("k"))
            .values(
                pushed_version=func.max(Pusher.pushed_version, bindparam("p")),
                due_at=case(
                    (
                        and_(bindparam("due", type_=Pusher.due_at.type).is_(None), Pusher.news),
                        bindparam("now", type_=Pusher.due_at.type),
                    ),
                    else_=bindparam("due", type_=Pusher.due_at.type),
                ),
                news=False,
                attempts=bindparam("n"),
                failing_since=bindparam("since", type_=Pusher.failing_since.type),
                leased_until=None,
            ),
            rows,
        )
