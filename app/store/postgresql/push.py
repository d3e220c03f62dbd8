"""Push on PostgreSQL: each unit of work one statement on the driver (push.sql).

One round trip each, like the ack batch: the Core versions cost a round 0.2-0.4 s for 100
pushers on a shared machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.db.engine import Database
from app.store.push import Lease, Pending, Settle, fold_unseen
from app.store.queries import load

__all__ = ["PostgresPush"]

_SQL = load("push.sql")


class PostgresPush:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def lease_and_read(
        self, now: datetime, until: datetime, limit: int
    ) -> tuple[list[tuple[Lease, Pending]], datetime | None]:
        params = {"now": now, "limit": limit, "until": until}
        async with self._db.driver() as driver:
            cursor = await driver.execute(_SQL["lease_and_read"], params)
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
        return list(zip(leases, fold_unseen(leases, rows), strict=True)), next_due

    async def settle(self, settled: Sequence[Settle], now: datetime) -> None:
        params = {
            "app_ids": [s.app_id for s in settled],
            "pushkeys": [s.pushkey for s in settled],
            "pushed": [-1 if s.pushed_version is None else s.pushed_version for s in settled],
            "due": [s.due_at for s in settled],
            "attempts": [s.attempts for s in settled],
            "since": [s.failing_since for s in settled],
            "gone": [s.delete for s in settled],
            "now": now,
        }
        async with self._db.driver() as driver:
            await driver.execute(_SQL["settle"], params)

    async def record_synced(self, seen: Sequence[tuple[str, int]]) -> None:
        params = {"device_ids": [d for d, _ in seen], "versions": [v for _, v in seen]}
        async with self._db.driver() as driver:
            await driver.execute(_SQL["record_synced"], params)
