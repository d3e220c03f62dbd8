"""Engine and session factories, and the SQLite connection rules that make it safe to share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import sqlalchemy.exc
from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, Pool, QueuePool
from sqlalchemy.util import queue as sqla_queue

from app.config import Settings
from app.db.replicas import Replicas

__all__ = ["ConnectionBudget", "Database", "database_now", "make_engine"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def make_engine(settings: Settings, pool_size: int | None = None, **kwargs: Any) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(settings.database_url, **kwargs)
        _sqlite_rules(engine)
        return engine
    return create_async_engine(
        settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # A request waits this long for a pooled connection, then answers 503: during an
        # outage every connection is busy failing, and SQLAlchemy's default (30 s) held
        # clients that long for the same answer.
        pool_timeout=settings.database_wait_seconds,
        poolclass=WaitBoundedPool,
        connect_args={**driver_options(settings), **kwargs.pop("connect_args", {})},
        **kwargs,
    )


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


async def database_now(session: AsyncSession | AsyncConnection) -> datetime:
    """The database's clock, the one clock all hosts share (PostgreSQL's clock_timestamp(),
    the moment of the call, not of the transaction's start). SQLite serves one process on
    one host, whose clock it is."""
    dialect = (
        session.dialect if isinstance(session, AsyncConnection) else session.get_bind().dialect
    )
    if dialect.name == "sqlite":
        return datetime.now(UTC)
    moment = await session.scalar(select(func.clock_timestamp()))
    assert isinstance(moment, datetime)
    return moment


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


class Database:
    """The process's database access: on PostgreSQL a pool for transactions and one kept in
    autocommit for single statements; on SQLite one engine serves both."""

    def __init__(self, settings: Settings, **engine_kwargs: Any) -> None:
        self.settings = settings
        # Transactions get a quarter of the pool; single statements the full pool below.
        self.engine = make_engine(
            settings, pool_size=transaction_pool_size(settings), **engine_kwargs
        )
        self.is_sqlite = settings.is_sqlite
        # Streaming replicas take sync pages (app.inbox.sync.fetch_since); started in the lifespan.
        urls = [] if self.is_sqlite else settings.replica_urls
        self.replicas = Replicas(urls, settings, driver_options(settings))
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
        # and COMMIT round trips on the hot single-statement paths (token lookup, send,
        # sync), and a bare connection skips the ORM session's bookkeeping. Those paths get
        # a pool of their own whose connections stay in autocommit: switching a shared
        # connection in and out of it at every checkout cost a fifth of a short statement.
        self._single = (
            self.engine.execution_options(readonly=True)
            if self.is_sqlite
            else make_engine(settings, isolation_level="AUTOCOMMIT", **engine_kwargs)
        )

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
        await self.engine.dispose()
        if not self.is_sqlite:
            await self._single.dispose()

    async def prewarm(self) -> None:
        """Open the single-statement pool's connections now (PostgreSQL). After a deploy
        every device reconnects at once; without this, the first requests each waited for
        PostgreSQL to start a backend (200 devices' first syncs on one restarted worker:
        median of three 362 ms without, 290 ms with). A database that is down is only
        logged: the service starts anyway and connects when it can."""
        if self.is_sqlite:
            return
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

    def connections_in_use(self) -> int:
        """Checked-out connections over both pools (for /metrics)."""
        engines = {id(e.pool): e.pool for e in (self.engine, self._single)}
        return sum(p.checkedout() for p in engines.values() if isinstance(p, QueuePool))

    async def dispose(self) -> None:
        await self.replicas.stop()
        await self.engine.dispose()
        if not self.is_sqlite:  # on SQLite _single is a view of the same engine
            await self._single.dispose()

    def session(self) -> AsyncSession:
        return self.sessions()
