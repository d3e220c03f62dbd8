"""The push worker's units of work: lease due pushers, read what they have not seen, settle.

What they ask of the database is the store's (app.store.push).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from app.db.engine import Database
from app.store import open_store
from app.store.push import Lease, Pending, Settle

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


def release(lease: Lease, now: datetime) -> Settle:
    """Unleased, due at once, its retry state kept."""
    return Settle(lease.app_id, lease.pushkey, None, now, lease.attempts, lease.failing_since)


async def lease_and_read(
    db: Database, now: datetime, limit: int
) -> tuple[list[tuple[Lease, Pending]], datetime | None]:
    """The due pushers leased for LEASE, each with what it has not seen, and the earliest due
    time still ahead, if any (app.store.push.PushStore.lease_and_read)."""
    return await open_store(db).push.lease_and_read(now, now + LEASE, limit)


async def settle(db: Database, settled: list[Settle], now: datetime) -> None:
    # One outcome per pusher: the last one stands; in key order, the order rows are locked in.
    last = {(s.app_id, s.pushkey): s for s in settled}
    await open_store(db).push.settle([last[key] for key in sorted(last)], now)
