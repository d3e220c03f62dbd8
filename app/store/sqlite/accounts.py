"""Accounts on SQLite: its own clock, and the counters (one writer: the upsert serialises)."""

from __future__ import annotations

import time
from datetime import datetime

from sqlalchemy import ColumnElement, func, text, type_coerce

from app.db.engine import Database
from app.db.models import UTCDateTime

__all__ = ["SqliteAccounts"]

# The counted attempt, in the caller's transaction (which holds SQLite's one write lock, so
# the clock read before it is still now): `fresh` is the count after this attempt.
_FRESH = "CASE WHEN expires_at <= :now THEN 1 ELSE hits + 1 END"
_COUNT_ATTEMPT = text(f"""
INSERT INTO throttle_counters (key, hits, retry_at, expires_at)
VALUES (:key, 1, :first_retry, max(:first_retry, :now) + :cap)
ON CONFLICT (key) DO UPDATE SET
    hits = {_FRESH},
    retry_at = CASE WHEN {_FRESH} < :limit THEN 0
                    ELSE :now + min(:cap, 1 << min({_FRESH} - :limit, :most)) END,
    expires_at = max(CASE WHEN {_FRESH} < :limit THEN 0
                          ELSE :now + min(:cap, 1 << min({_FRESH} - :limit, :most)) END,
                     :now) + :cap
WHERE retry_at <= :now OR expires_at <= :now
RETURNING hits
""")
_ATTEMPT_WAIT = text("SELECT retry_at - :now FROM throttle_counters WHERE key = :key")
_CLEAR = text("DELETE FROM throttle_counters WHERE key = :key")
_PURGE = text("DELETE FROM throttle_counters WHERE expires_at <= :now")


class SqliteAccounts:
    def __init__(self, db: Database) -> None:
        self._db = db

    def clock(self) -> ColumnElement[datetime]:
        # To the millisecond, written in the text SQLAlchemy stores its times in (six
        # digits of fraction), so that they compare.
        stamp = func.strftime("%Y-%m-%d %H:%M:%f", "now").concat("000")
        return type_coerce(stamp, UTCDateTime())

    async def count_attempt(self, key: str, limit: int, cap: int, most: int) -> float | None:
        now = time.time()  # SQLite serves one process on one host, whose clock this is
        first_retry = 0 if limit > 1 else now + min(cap, 1 << min(1 - limit, most))
        params = {
            "key": key,
            "limit": limit,
            "cap": cap,
            "most": most,
            "now": now,
            "first_retry": first_retry,
        }
        async with self._db.session() as session, session.begin():
            if (await session.execute(_COUNT_ATTEMPT, params)).first() is not None:
                return None
            left = await session.scalar(_ATTEMPT_WAIT, {"key": key, "now": now})
            return float(left or 0.0)

    async def clear_attempts(self, key: str) -> None:
        async with self._db.session() as session, session.begin():
            await session.execute(_CLEAR, {"key": key})

    async def purge_attempts(self) -> None:
        async with self._db.session() as session, session.begin():
            await session.execute(_PURGE, {"now": time.time()})
