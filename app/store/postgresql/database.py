"""The PostgreSQL database: two pools, snapshot reads, replicas, and the server's clock."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from app.config import Settings
from app.db.engine import Database, WaitBoundedPool, transaction_pool_size
from app.db.replicas import Replicas

__all__ = ["PostgresDatabase", "driver_options", "make_engine"]

log = logging.getLogger(__name__)


class PostgresDatabase(Database):
    """A pool for transactions and one kept in autocommit for single statements; served by
    several processes and hosts, and migrated by the operator (`msgsync migrate`)."""

    serves_one_process = False
    migrates_at_start = False

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            settings,
            # Transactions get a quarter of the pool; single statements the full pool below.
            engine=make_engine(settings, pool_size=transaction_pool_size(settings)),
            # One statement is its own transaction: autocommit saves the BEGIN and COMMIT
            # round trips on the hot single-statement paths (token lookup, send, sync), and a
            # bare connection skips the ORM session's bookkeeping. Those paths get a pool of
            # their own whose connections stay in autocommit: switching a shared connection
            # in and out of it at every checkout cost a fifth of a short statement.
            single=make_engine(settings, isolation_level="AUTOCOMMIT"),
            read_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True},
            replicas=Replicas(settings.replica_urls, settings, driver_options(settings)),
        )

    async def now(self, conn: AsyncSession | AsyncConnection) -> datetime:
        """The server's clock_timestamp(), the one clock all hosts share: the moment of the
        call, not of the transaction's start."""
        moment = await conn.scalar(select(func.clock_timestamp()))
        assert isinstance(moment, datetime)
        return moment

    async def prewarm(self) -> None:
        """Open the single-statement pool's connections now. After a deploy every device
        reconnects at once; without this, the first requests each waited for PostgreSQL to
        start a backend (200 devices' first syncs on one restarted worker: median of three
        362 ms without, 290 ms with). A database that is down is only logged: the service
        starts anyway and connects when it can."""
        opened = await asyncio.gather(
            *(self._single.connect().start() for _ in range(self.settings.db_pool_size)),
            return_exceptions=True,
        )
        failures = [c for c in opened if isinstance(c, BaseException)]
        for conn in opened:
            if isinstance(conn, AsyncConnection):
                await conn.close()
        if failures:
            log.warning(
                "could not open %d of the pool's connections: %s", len(failures), failures[0]
            )


def make_engine(settings: Settings, pool_size: int | None = None, **options: Any) -> AsyncEngine:
    """An engine on database_url with the pool every PostgreSQL engine of the process has;
    `options` go to SQLAlchemy (isolation_level)."""
    return create_async_engine(
        settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # A request waits this long for a pooled connection, then answers 503: during an
        # outage every connection is busy failing, and SQLAlchemy's default (30 s) held
        # clients that long for the same answer.
        pool_timeout=settings.database_wait_seconds,
        poolclass=WaitBoundedPool,
        connect_args=driver_options(settings),
        **options,
    )


def driver_options(settings: Settings) -> dict[str, Any]:
    """psycopg connection options for database_url's connections.

    Every connection of both pools is made here, so the bare-driver statements
    (Database.driver) follow the same rule as SQLAlchemy's: prepare_threshold=None means no
    server-side prepared statement is ever made, which a transaction pooler requires.
    connect_timeout bounds each attempt (per host listed) by MSGSYNC_DATABASE_WAIT_SECONDS:
    without it an unreachable host held a request for libpq's default of minutes.
    """
    options: dict[str, Any] = {"connect_timeout": settings.database_connect_timeout}
    if not settings.prepared_statements:
        options["prepare_threshold"] = None
    return options
