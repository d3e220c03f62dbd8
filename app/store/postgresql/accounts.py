"""Accounts on PostgreSQL: clock_timestamp(), and the counters of accounts.sql."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, func, type_coerce

from app.db.engine import Database
from app.db.models import UTCDateTime
from app.store.queries import load

__all__ = ["PostgresAccounts"]

_SQL = load("accounts.sql")


class PostgresAccounts:
    def __init__(self, db: Database) -> None:
        self._db = db

    def clock(self) -> ColumnElement[datetime]:
        # The moment of the call, not of the transaction's start.
        return type_coerce(func.clock_timestamp(), UTCDateTime())

    async def count_attempt(self, key: str, limit: int, cap: int, most: int) -> float | None:
        params = {"key": key, "limit": limit, "cap": cap, "most": most}
        async with self._db.session() as session, session.begin():
            connection = await session.connection()
            counted = (await connection.exec_driver_sql(_SQL["count_attempt"], params)).first()
            if counted is not None:
                return None
            left = await connection.exec_driver_sql(_SQL["attempt_wait"], {"key": key})
            return float(left.scalar() or 0.0)

    async def clear_attempts(self, key: str) -> None:
        async with self._db.session() as session, session.begin():
            connection = await session.connection()
            await connection.exec_driver_sql(_SQL["clear_attempts"], {"key": key})

    async def purge_attempts(self) -> None:
        async with self._db.session() as session, session.begin():
            connection = await session.connection()
            await connection.exec_driver_sql(_SQL["purge_attempts"], {})
