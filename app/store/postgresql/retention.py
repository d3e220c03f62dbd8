"""Retention on PostgreSQL: an advisory lock per run, the lock rule per batch."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import psycopg
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.notifier import libpq_url
from app.store.queries import load
from app.store.retention import AlreadyRunning

__all__ = ["LOCK_KEY", "PostgresRetention"]

# The advisory lock that lets one retention run at a time: "msgsync" in ASCII. Advisory
# locks are scoped to one database, so each database has its own.
LOCK_KEY = 0x6D_73_67_73_79_6E_63

_SQL = load("retention.sql")
_LOCK_USERS = load("inbox.sql")["lock_users"]


class PostgresRetention:
    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def run_lock(self, wait: bool) -> AsyncIterator[None]:
        # A session-level advisory lock belongs to a server session, so it is taken on a
        # connection of its own to the session URL, never a pooled one: through a
        # transaction pooler the lock would stay on whichever server connection ran the
        # statement (held for ever, every later run a false "already running"), and a
        # pooled connection would be handed out again still holding it. Closing this
        # connection ends the session, which releases the lock on every exit path, a crash
        # of this process included. Autocommit: the lock is held for the whole run without
        # a transaction (and a snapshot that holds back vacuum) staying open.
        conn = await psycopg.AsyncConnection.connect(
            libpq_url(self._db.settings.session_url),
            autocommit=True,
            application_name="msgsync-retention",
            # A dead primary fails the run within MSGSYNC_DATABASE_WAIT_SECONDS per host.
            connect_timeout=self._db.settings.database_connect_timeout,
        )
        try:
            if wait:
                await conn.execute(_SQL["run_lock"], {"key": LOCK_KEY})
            else:
                cursor = await conn.execute(_SQL["try_run_lock"], {"key": LOCK_KEY})
                row = await cursor.fetchone()
                if row is None or not row[0]:
                    raise AlreadyRunning("another retention run holds the lock on this database")
            yield
        finally:
            await conn.close()

    async def lock_users(self, session: AsyncSession, user_ids: Sequence[str]) -> None:
        # In the database's user_id order, which Python's sort may not share (collation).
        connection = await session.connection()
        await connection.exec_driver_sql(_LOCK_USERS, {"user_ids": list(user_ids)})
