"""The process's database access as every database has it: the Database's pools and
sessions, the pool class, the connection budget.

What differs by database (how an engine is made, the isolation of reads, the clock, whether
a pool is opened ahead) is each one's Database subclass, in app/store/<database>/database.py;
app.store.open_database picks the subclass from the URL. Nothing here asks which database
it runs on.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import psycopg
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, Pool, QueuePool
from sqlalchemy.util import queue as sqla_queue

from app.config import Settings
from app.db.replicas import Replicas

__all__ = ["ConnectionBudget", "Database", "WaitBoundedPool", "transaction_pool_size"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class WaitBoundedPool(AsyncAdaptedQueuePool):
    """SQLAlchemy's queue pool, where a request that waited pool_timeout for a connection
    gets its TimeoutError (503) then, not a connection attempt of its own on top.

    In an outage every pooled connection is busy failing to connect: the queue pool let a
    request that had waited its pool_timeout, and found on waking that those attempts had
    failed and freed their places, start one more attempt, so that it waited the pool's
    timeout and then the connect timeout (4 s for a 2 s MSGSYNC_DATABASE_WAIT_SECONDS)."""

    def _do_get(self) -> ConnectionPoolEntry:
        if not (-1 < self._max_overflow <= self._overflow):
            return super()._do_get()  # room for a connection of its own: no wait
        try:
            return self._pool.get(True, self._timeout)
        except sqla_queue.Empty:
            pass  # not raised from inside: the queue being empty is not the error
        raise sqlalchemy.exc.TimeoutError(
            f"no pooled connection came free within {self._timeout:g} s", code="3o7r"
        )


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """The most PostgreSQL connections one worker process opens, by role.

    A deployment holds at most hosts x workers x per_worker; with a pooler in front, the
    statement and transaction connections are the pooler's clients and only `sessions` reach
    PostgreSQL directly (plus the pooler's own pool)."""

    statements: int  # single-statement pool (sends, syncs, token look-ups)
    transactions: int  # transaction pool (logins, recalls, read receipts, ack batches)
    sessions: int = 2  # LISTEN and NOTIFY, each on a connection of its own

    @classmethod
    def of(cls, settings: Settings) -> ConnectionBudget:
        return cls(
            statements=settings.db_pool_size + settings.db_max_overflow,
            transactions=transaction_pool_size(settings) + settings.db_max_overflow,
        )

    @property
    def per_worker(self) -> int:
        return self.statements + self.transactions + self.sessions

    def formula(self, workers: int) -> str:
        return (
            f"hosts x {workers} workers x ({self.statements} statements + "
            f"{self.transactions} transactions + {self.sessions} listen/notify) = "
            f"hosts x {workers * self.per_worker} connections"
        )


def transaction_pool_size(settings: Settings) -> int:
    # Transactions (login, recall, read receipts, ack batches, the sync fallback) are the
    # rarer path: a quarter of the statement pool, at least two.
    return max(2, settings.db_pool_size // 4)


class Database(ABC):
    """The process's database access: a pool for transactions (`session()`), one for single
    statements (`statement()`), snapshot reads (`read_sessions`), and read replicas.

    One subclass per database (app.store.postgresql.database, app.store.sqlite.database),
    made by app.store.open_database. Its class attributes answer before any engine is made,
    for `serve` and the CLI."""

    # One process serves the database: wake-ups stay in process, no connection budget is
    # shared among workers, and `serve` refuses several workers.
    serves_one_process: ClassVar[bool]
    # `serve` and the CLI create and migrate the database themselves (the embedded one must
    # run on a bare machine); otherwise the operator migrates it.
    migrates_at_start: ClassVar[bool]

    def __init__(
        self,
        settings: Settings,
        *,
        engine: AsyncEngine,
        single: AsyncEngine,
        read_options: dict[str, Any],
        replicas: Replicas,
    ) -> None:
        """`engine` serves transactions; `single` single statements (a pool of its own, or a
        view of `engine`); `read_options` make a transaction one read-only snapshot."""
        self.settings = settings
        self.engine = engine
        # Streaming replicas take sync pages (app.inbox.sync.fetch_since); started in the lifespan.
        self.replicas = replicas
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads that must see one snapshot (a sync reads the floor and the entries together).
        self.read_sessions = async_sessionmaker(
            self.engine.execution_options(**read_options), expire_on_commit=False
        )
        self._single = single

    @abstractmethod
    async def now(self, conn: AsyncSession | AsyncConnection) -> datetime:
        """The clock every time the service stamps or judges is read from: the one all the
        hosts serving this database share, read through `conn`."""

    @abstractmethod
    async def prewarm(self) -> None:
        """Open the single-statement pool's connections now, where opening one is slow."""

    def statement(self) -> AsyncConnection:
        """A connection for one statement (`async with db.statement() as conn:`)."""
        return self._single.connect()

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """The psycopg connection under a single-statement connection (PostgreSQL only).

        For the hottest statements, whose text never changes: SQLAlchemy's per-execution
        work (cache-key lookup, result wrapping, a greenlet switch) cost sends 14 % of their
        throughput (1097-1168 against 1278-1307 sends/s, three runs each).
        """
        pool = self._single.pool
        async with self.statement() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            try:
                yield raw
            except psycopg.OperationalError:
                if raw.broken:
                    await self._after_disconnect(conn, pool)
                raise
            except psycopg.errors.ReadOnlySqlTransaction:
                # The primary is being demoted (a failover drains it read-only): its
                # connections can write no more, so they go as a dropped one's would.
                await self._after_disconnect(conn, pool)
                raise

    async def _after_disconnect(self, conn: AsyncConnection, pool: Pool) -> None:
        """What SQLAlchemy does when it sees a disconnect itself, which it cannot on the bare
        driver: drop this connection and every idle one, which the same restart or failover
        has most likely ended too. Otherwise each would fail one more request (eight of
        eight did in tests/test_database_outage.py)."""
        await conn.invalidate()
        if self._single.pool is pool:  # not already replaced after a concurrent failure
            await self._single.dispose()

    async def read_lists(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work` in one read-only snapshot on a serving replica, else on the primary.

        For history and conversation lists, where an answer a moment old (at most the
        replicas' allowed lag) is still right. A replica that fails is marked down and the
        primary answers: a replica never turns a read into an error."""
        replica = self.replicas.pick()
        if replica is not None:
            try:
                async with replica.read_sessions() as session, session.begin():
                    return await work(session)
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
                # Only if it failed before answering: work() has no side effects to repeat.
                replica.failed("connection lost")
                log.warning("replica %d failed a read: %s", replica.number, exc)
        async with self.read_sessions() as session, session.begin():
            return await work(session)

    async def drop_pooled_connections(self) -> None:
        """The database went away (the listener saw its connection drop): close every idle
        pooled connection now, and those in use when they come back. Otherwise each would
        fail one request after the database is back (one per pool per worker, seconds or
        minutes later); the pools reconnect on demand."""
        for engine in self._engines():
            await engine.dispose()

    def connections_in_use(self) -> int:
        """Checked-out connections over both pools (for /metrics)."""
        pools = (engine.pool for engine in self._engines())
        return sum(pool.checkedout() for pool in pools if isinstance(pool, QueuePool))

    async def dispose(self) -> None:
        await self.replicas.stop()
        for engine in self._engines():
            await engine.dispose()

    def _engines(self) -> list[AsyncEngine]:
        """The engines with a pool of their own: the single-statement engine is left out
        where it is a view of the transaction engine (disposing that disposes both)."""
        if self._single.pool is self.engine.pool:
            return [self.engine]
        return [self.engine, self._single]

    def session(self) -> AsyncSession:
        return self.sessions()
