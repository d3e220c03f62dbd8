"""The retention job: prune each user's offline store to a prefix cut, raising the floor."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.auth import idle_cutoff
from app.config import Settings
from app.db.engine import Database
from app.db.models import Device, InboxEntry, User
from app.store import open_store
from app.store.retention import AlreadyRunning

__all__ = [
    "BATCH_ENTRIES",
    "AlreadyRunning",
    "IdleReport",
    "PruneReport",
    "prune",
    "remove_idle_devices",
    "retention_lock",
]

# At most this many inbox entries are deleted per transaction: a batch holds the write lock
# (SQLite) or its users' row locks (PostgreSQL, only at the end) for a bounded time. The
# setting MSGSYNC_RETENTION_BATCH_ENTRIES (and --batch-entries) chooses it for the CLI.
BATCH_ENTRIES: int = Settings.model_fields["retention_batch_entries"].default


@dataclass(frozen=True, slots=True)
class PruneReport:
    dry_run: bool
    max_age_seconds: float
    max_entries: int
    cutoff: str  # entries created before this moment count as old
    users_touched: int  # users whose floor was (or, in a dry run, would be) raised
    deleted_by_age: int
    deleted_by_count: int
    transactions: int
    elapsed_seconds: float

    @property
    def deleted(self) -> int:
        return self.deleted_by_age + self.deleted_by_count

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "deleted": self.deleted}


def retention_lock(db: Database, wait: bool = False) -> AbstractAsyncContextManager[None]:
    """Hold the database-wide retention lock; raise AlreadyRunning unless `wait`."""
    return open_store(db).retention.run_lock(wait)


@dataclass(slots=True)
class _Tally:
    users: set[str]
    by_age: int = 0
    by_count: int = 0
    transactions: int = 0


async def prune(
    db: Database,
    max_age: timedelta,
    max_entries: int,
    now: datetime | None = None,
    dry_run: bool = False,
    batch_users: int = 200,
    batch_entries: int = BATCH_ENTRIES,
    wait: bool = False,
) -> PruneReport:
    """Delete inbox entries older than `max_age` and all but the newest `max_entries` per user.

    Each user's cut-off is max(version of its newest old entry, latest_version - max_entries):
    every entry at or below it is deleted and the floor raised to it, in one transaction, so
    a user's store is always a suffix of its versions. `now` fixes the clock (tests). Raises
    AlreadyRunning when another run holds the lock and `wait` is false.
    """
    if batch_users < 1 or batch_entries < 1 or max_entries < 0:
        raise ValueError("batch sizes must be positive and max_entries not negative")
    started = time.monotonic()
    tally = _Tally(users=set())
    async with retention_lock(db, wait=wait):
        if now is None:
            # The database's clock, which stamped every created_at, not this host's.
            async with db.statement() as conn:
                now = await db.now(conn)
        cutoff = now - max_age
        age_cuts, candidates = await _candidates(db, cutoff, max_entries)
        pending = deque(candidates)
        while pending:
            batch = [pending.popleft() for _ in range(min(batch_users, len(pending)))]
            if dry_run:
                await _count_batch(db, batch, age_cuts, max_entries, tally)
                continue
            unfinished = await _prune_batch(db, batch, age_cuts, max_entries, batch_entries, tally)
            # A user whose backlog outgrew this transaction's budget goes first in the next.
            pending.extendleft(reversed(unfinished))
    return PruneReport(
        dry_run=dry_run,
        max_age_seconds=max_age.total_seconds(),
        max_entries=max_entries,
        cutoff=cutoff.isoformat().replace("+00:00", "Z"),
        users_touched=len(tally.users),
        deleted_by_age=tally.by_age,
        deleted_by_count=tally.by_count,
        transactions=tally.transactions,
        elapsed_seconds=round(time.monotonic() - started, 3),
    )


async def _candidates(
    db: Database, cutoff: datetime, max_entries: int
) -> tuple[dict[str, int], list[str]]:
    """Users with old entries (with their age cut) and users over the count cap.

    Read once, up front: the age scan walks ix_inbox_created_at over exactly the old rows,
    and the count test needs no inbox read, since versions above the floor are gap-free
    (one inbox entry per change), so a user holds latest_version - floor_version entries.
    The list is in memory (about 100 bytes per candidate user) so that no transaction,
    and no snapshot holding back vacuum, stays open for the whole run.
    """
    async with db.read_sessions() as session, session.begin():
        old = await session.execute(
            select(InboxEntry.user_id, func.max(InboxEntry.version))
            .where(InboxEntry.created_at < cutoff)
            .group_by(InboxEntry.user_id)
        )
        age_cuts: dict[str, int] = dict(old.all())
        over = await session.scalars(
            select(User.user_id).where(User.latest_version - User.floor_version > max_entries)
        )
        candidates = sorted(age_cuts.keys() | set(over))
    return age_cuts, candidates


@dataclass(frozen=True, slots=True)
class _Cut:
    user_id: str
    floor: int  # the floor read in this transaction
    age_cut: int  # entries at or below it go because of their age
    cut: int  # the new floor


def _plan(rows: Iterable[Any], age_cuts: dict[str, int], max_entries: int) -> list[_Cut]:
    plans = []
    for row in rows:
        age_cut = age_cuts.get(row.user_id, 0)
        cut = max(age_cut, row.latest_version - max_entries)
        if cut > row.floor_version:  # the floor never moves down
            plans.append(_Cut(row.user_id, row.floor_version, age_cut, cut))
    return plans


async def _read_users(session: AsyncSession, batch: list[str]) -> list[Any]:
    rows = await session.execute(
        select(User.user_id, User.latest_version, User.floor_version).where(User.user_id.in_(batch))
    )
    return list(rows)


async def _prune_batch(
    db: Database,
    batch: list[str],
    age_cuts: dict[str, int],
    max_entries: int,
    batch_entries: int,
    tally: _Tally,
) -> list[str]:
    """One transaction: delete a prefix of each user's entries, then raise the floors.

    Returns the users left with entries to delete once the entry budget ran out.
    """
    unfinished: list[str] = []
    budget = batch_entries
    async with db.session() as session, session.begin():
        # Unlocked read (READ COMMITTED): a send committing meanwhile only raises
        # latest_version, which makes this cut conservative, never wrong; every version at
        # or below a committed latest_version is committed, so no in-flight entry is cut.
        plans = _plan(await _read_users(session, batch), age_cuts, max_entries)
        done: list[_Cut] = []
        for plan in sorted(plans, key=lambda p: p.user_id):
            if budget == 0:
                unfinished.append(plan.user_id)
                continue
            # At most one entry per version above the floor, so the range bounds the rows.
            cut = min(plan.cut, plan.floor + budget)
            budget -= cut - plan.floor
            if cut < plan.cut:
                unfinished.append(plan.user_id)
            age_part = min(plan.age_cut, cut)
            if age_part > plan.floor:
                tally.by_age += await _delete_range(session, plan.user_id, plan.floor, age_part)
            if cut > max(plan.floor, age_part):
                low = max(plan.floor, age_part)
                tally.by_count += await _delete_range(session, plan.user_id, low, cut)
            done.append(_Cut(plan.user_id, plan.floor, plan.age_cut, cut))
        if done:
            await _raise_floors(db, session, done)
    tally.transactions += 1
    tally.users.update(plan.user_id for plan in done)
    return unfinished


async def _delete_range(session: AsyncSession, user_id: str, low: int, high: int) -> int:
    """Delete the user's entries with a version in (low, high]; returns how many."""
    result = await session.execute(
        delete(InboxEntry).where(
            InboxEntry.user_id == user_id, InboxEntry.version > low, InboxEntry.version <= high
        )
    )
    return cast(CursorResult[Any], result).rowcount


async def _raise_floors(db: Database, session: AsyncSession, cuts: list[_Cut]) -> None:
    # Lock the users rows last, so that sends wait only for the end of the batch, not for
    # its deletes, and under the lock rule, as sends lock them.
    await open_store(db).retention.lock_users(session, [c.user_id for c in cuts])
    # The guard keeps the floor from moving down should two runs ever overlap.
    users = cast(Table, User.__table__)
    await session.execute(
        update(users)
        .where(users.c.user_id == bindparam("uid"), users.c.floor_version < bindparam("cut"))
        .values(floor_version=bindparam("cut")),
        [{"uid": c.user_id, "cut": c.cut} for c in cuts],
    )


async def _count_batch(
    db: Database, batch: list[str], age_cuts: dict[str, int], max_entries: int, tally: _Tally
) -> None:
    """What _prune_batch would delete, counted in one snapshot, without the entry budget."""
    async with db.read_sessions() as session, session.begin():
        for plan in _plan(await _read_users(session, batch), age_cuts, max_entries):
            age_part = min(plan.age_cut, plan.cut)
            if age_part > plan.floor:
                tally.by_age += await _count_range(session, plan.user_id, plan.floor, age_part)
            low = max(plan.floor, age_part)
            if plan.cut > low:
                tally.by_count += await _count_range(session, plan.user_id, low, plan.cut)
            tally.users.add(plan.user_id)
    tally.transactions += 1


async def _count_range(session: AsyncSession, user_id: str, low: int, high: int) -> int:
    count = await session.scalar(
        select(func.count()).where(
            InboxEntry.user_id == user_id, InboxEntry.version > low, InboxEntry.version <= high
        )
    )
    return int(count or 0)


# Idle devices deleted per transaction: each delete takes the devices' row locks and
# cascades to their pushers, so a batch stays short.
IDLE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class IdleReport:
    idle_days: int  # 0: idle expiry is off and nothing was looked at
    cutoff: str | None  # devices last seen before this moment are idle
    removed: int  # devices deleted (in a dry run, that would be)


async def remove_idle_devices(
    db: Database, idle_days: int, now: datetime | None = None, dry_run: bool = False
) -> IdleReport:
    """Delete the devices not seen for `idle_days` (MSGSYNC_DEVICE_IDLE_DAYS); 0 does nothing.

    Such devices already answer 401 (app.api.deps.current_device); this removes their rows, and
    with them their pushers. None of their tokens can be in a server's token cache: a cached
    token was read less than a minute ago, when its device was not idle. `now` fixes the
    clock (tests).
    """
    if idle_days <= 0:
        return IdleReport(idle_days=0, cutoff=None, removed=0)
    if now is None:
        async with db.statement() as conn:
            now = await db.now(conn)  # the clock that stamped last_seen_at
    cutoff = idle_cutoff(idle_days, now)
    assert cutoff is not None
    # One scan for the ids (devices has no index on last_seen_at, which every active device
    # rewrites up to once a minute), then deletes by primary key in short transactions.
    async with db.session() as session, session.begin():
        idle = list(
            await session.scalars(select(Device.device_id).where(Device.last_seen_at < cutoff))
        )
    removed = len(idle) if dry_run else 0
    for start in range(0, 0 if dry_run else len(idle), IDLE_BATCH):
        async with db.session() as session, session.begin():
            result = await session.execute(
                delete(Device).where(
                    Device.device_id.in_(idle[start : start + IDLE_BATCH]),
                    # Checked again: a device seen since the scan is not idle any more.
                    Device.last_seen_at < cutoff,
                )
            )
            removed += cast(CursorResult[Any], result).rowcount
    return IdleReport(
        idle_days=idle_days, cutoff=cutoff.isoformat().replace("+00:00", "Z"), removed=removed
    )
