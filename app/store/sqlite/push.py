"""Push on SQLite: the same units of work, statement by statement (one process: there is
no other round to skip)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.db.models import Device, InboxEntry, Message, Pusher, User
from app.store.push import Lease, Pending, Settle, fold_unseen

__all__ = ["SqlitePush"]

_RECORD_SYNCED = (
    update(Pusher)
    .where(Pusher.device_id == bindparam("d"), Pusher.synced_version < bindparam("v"))
    .values(synced_version=func.max(Pusher.synced_version, bindparam("v")))
)


class SqlitePush:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def lease_and_read(
        self, now: datetime, until: datetime, limit: int
    ) -> tuple[list[tuple[Lease, Pending]], datetime | None]:
        taken, next_due = await _lease(self._db, now, until, limit)
        if not taken:
            return [], next_due
        try:
            unseen = await _unseen(self._db, taken)
            return list(zip(taken, fold_unseen(taken, unseen), strict=True)), next_due
        except BaseException:
            # Shutting down, or the read failed: give the leases back now rather than make
            # the next round wait for them to expire.
            with contextlib.suppress(Exception):
                released = [
                    Settle(x.app_id, x.pushkey, None, now, x.attempts, x.failing_since)
                    for x in taken
                ]
                await self.settle(released, now)
            raise

    async def settle(self, settled: Sequence[Settle], now: datetime) -> None:
        async with self._db.session() as session, session.begin():
            await _settle(session, settled, now)

    async def record_synced(self, seen: Sequence[tuple[str, int]]) -> None:
        async with self._db.session() as session, session.begin():
            conn = await session.connection()
            await conn.execute(_RECORD_SYNCED, [{"d": d, "v": v} for d, v in seen])


async def _lease(
    db: Database, now: datetime, until: datetime, limit: int
) -> tuple[list[Lease], datetime | None]:
    """The leases and the next due time."""
    seen = func.max(Pusher.synced_version, Device.acked_version)
    floor = func.max(Pusher.pushed_version, Pusher.synced_version, Device.acked_version)
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
                .values(leased_until=until)
            )
        next_due = await session.scalar(select(func.min(Pusher.due_at)).where(Pusher.due_at > now))
    return [Lease(*row) for row in rows], next_due


async def _unseen(db: Database, leases: list[Lease]) -> list[tuple[Any, ...]]:
    """fold_unseen's rows for these leases, as PostgreSQL's lease_and_read reads them."""
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


async def _settle(session: AsyncSession, settled: Sequence[Settle], now: datetime) -> None:
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
