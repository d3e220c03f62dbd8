"""Engine and session factories, and the SQLite connection rules that make it safe to share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from app.config import Settings

__all__ = ["Database", "make_engine"]


def make_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(settings.database_url, **kwargs)
        _sqlite_rules(engine)
        return engine
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=False,
        **kwargs,
    )


def _sqlite_rules(engine: AsyncEngine) -> None:
    """WAL so that readers never wait for the writer; BEGIN IMMEDIATE for writes.

    pysqlite's own transaction handling starts a deferred transaction that upgrades to a
    write lock at the first write; two such upgrades deadlock (SQLITE_BUSY at once, with
    no wait). Taking the write lock at BEGIN makes concurrent writers queue on busy_timeout.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get("readonly") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One engine per process, plus the two session factories the domain code uses."""

    def __init__(self, settings: Settings, **engine_kwargs: Any) -> None:
        self.settings = settings
        self.engine = make_engine(settings, **engine_kwargs)
        self.is_sqlite = settings.is_sqlite
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads that must see one snapshot (a sync reads the floor and the entries together):
        # REPEATABLE READ on PostgreSQL; a deferred transaction is already a snapshot in WAL.
        read_options: dict[str, Any] = {"readonly": True}
        if not self.is_sqlite:
            read_options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        self.read_sessions = async_sessionmaker(
            self.engine.execution_options(**read_options), expire_on_commit=False
        )
        # One statement is its own transaction: on PostgreSQL autocommit saves the BEGIN
        # and COMMIT round trips on hot single-statement paths (token lookup, send, sync),
        # and a bare connection skips the ORM session's bookkeeping.
        self._single = self.engine.execution_options(
            **({"readonly": True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
        )

        # A burst of requests (thousands of devices reconnecting at once) must queue here,
        # on a semaphore, not inside SQLAlchemy's pool: a request waiting in there is parked
        # in a greenlet whose saved stack costs tens of kilobytes, and memory that a burst
        # took is seldom given back to the system.
        self._gate = asyncio.Semaphore(settings.db_pool_size + settings.db_max_overflow)

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one statement (`async with db.statement() as conn:`)."""
        async with self._gate, self._single.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()

    def session(self) -> AsyncSession:
        return self.sessions()
