"""The SQLite database: one file, one process, one engine, and the host's clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from app.config import Settings
from app.db.engine import Database
from app.db.replicas import Replicas

__all__ = ["SqliteDatabase", "make_engine"]


class SqliteDatabase(Database):
    """The embedded default: one engine serves transactions and single statements, no
    replicas; one process serves it, and creates and migrates its file at start."""

    serves_one_process = True
    migrates_at_start = True

    def __init__(self, settings: Settings) -> None:
        engine = make_engine(settings)
        super().__init__(
            settings,
            engine=engine,
            # Single statements are a view of the same engine (one file, one pool) whose
            # transactions begin DEFERRED: they read, and take no write lock to do it.
            single=engine.execution_options(readonly=True),
            # A deferred transaction is already one snapshot in WAL mode.
            read_options={"readonly": True},
            replicas=Replicas([], settings, {}),
        )

    async def now(self, conn: AsyncSession | AsyncConnection) -> datetime:
        """The host's clock: SQLite serves one process on one host, whose clock it is."""
        return datetime.now(UTC)

    async def prewarm(self) -> None:
        """Nothing to open ahead: a connection to the file opens at once."""


def make_engine(settings: Settings) -> AsyncEngine:
    """WAL so that readers never wait for the writer; BEGIN IMMEDIATE for writes.

    pysqlite's own transaction handling starts a deferred transaction that upgrades to a
    write lock at the first write; two such upgrades deadlock (SQLITE_BUSY at once, with
    no wait). Taking the write lock at BEGIN makes concurrent writers queue on busy_timeout.
    """
    engine = create_async_engine(settings.database_url)

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

    return engine
