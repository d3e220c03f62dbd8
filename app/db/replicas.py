"""Streaming replicas for reads: which ones serve, and a connection to one of them.

A replica only ever makes a read shorter, never wrong: its snapshot of a user's inbox is a
gap-free prefix of the primary's (versions commit in order), and the caller falls back to
the primary whenever the replica lacks what the request needs (see sync.fetch_since). The
lag check keeps answers fresh, not correct: correctness never depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import Settings

__all__ = ["Replica", "Replicas"]

log = logging.getLogger(__name__)

# How often each process checks its replicas' recovery state and lag.
CHECK_INTERVAL_SECONDS = 1.0

# Users whose own latest write this process remembers (see Replicas.wrote). One forgotten
# wrote long enough ago that any serving replica has replayed it.
WRITERS_KEPT = 100_000

# Lag in seconds: none when everything received is replayed and the WAL receiver streams;
# else the age of the last replayed transaction. Not a replica (promoted, or the primary by
# mistake): NULL, and it does not serve.
_LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN NULL
    WHEN NOT EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 'Infinity'::float8
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
    ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8,
                  'Infinity'::float8)
END
"""


@dataclass
class Replica:
    number: int  # 1-based position in MSGSYNC_DATABASE_REPLICA_URLS: never its address
    engine: AsyncEngine
    serving: bool = False
    lag_seconds: float | None = None
    problem: str = field(default="not checked yet")
    # Reads of several statements in one snapshot (history, conversation lists).
    read_sessions: async_sessionmaker[AsyncSession] = field(init=False)

    def __post_init__(self) -> None:
        snapshot = self.engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        self.read_sessions = async_sessionmaker(snapshot, expire_on_commit=False)

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """A psycopg connection to this replica, in autocommit (one statement, one snapshot)."""
        async with self.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            try:
                yield raw
            except psycopg.OperationalError:
                # The checkout itself failing (connection refused) is marked by the caller.
                if raw.broken:
                    await conn.invalidate()
                self.failed("connection lost")
                raise

    def failed(self, problem: str) -> None:
        """Stop using it until the next check finds it well."""
        self.serving = False
        self.problem = problem

    def status(self) -> dict[str, Any]:
        return {
            "replica": self.number,
            "serving": self.serving,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            **({} if self.serving else {"problem": self.problem}),
        }


class Replicas:
    def __init__(self, urls: list[str], settings: Settings, connect_args: dict[str, Any]) -> None:
        self.max_lag = settings.replica_max_lag_seconds
        self.all = [
            Replica(
                number,
                create_async_engine(
                    url,
                    isolation_level="AUTOCOMMIT",
                    pool_size=replica_pool_size(settings),
                    max_overflow=settings.db_max_overflow,
                    pool_timeout=settings.database_wait_seconds,
                    connect_args=connect_args,
                ),
            )
            for number, url in enumerate(urls, start=1)
        ]
        self._turn = itertools.count()
        self._checker: asyncio.Task[None] | None = None
        self._written: OrderedDict[str, int] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self.all)

    def wrote(self, user_id: str, version: int) -> None:
        """The user's own write (a send, a read receipt) took their inbox to `version`: until
        a replica has it, the user's syncs read the primary, so that a device never syncs
        back to a moment before its own write (read your writes). Per process: a sync on
        another worker or host may still read a replica that has not replayed it."""
        if not self.all:
            return
        if version > self._written.get(user_id, 0):
            self._written[user_id] = version
        self._written.move_to_end(user_id)
        if len(self._written) > WRITERS_KEPT:
            self._written.popitem(last=False)

    def written(self, user_id: str) -> int:
        """The latest version this process wrote for the user's own write (0: none known)."""
        return self._written.get(user_id, 0)

    def pick(self) -> Replica | None:
        """A serving replica, in turn; None when none serves (the primary reads)."""
        serving = [r for r in self.all if r.serving]
        return serving[next(self._turn) % len(serving)] if serving else None

    async def start(self) -> None:
        if self.all:
            await self.check()
            self._checker = asyncio.create_task(self._check_forever(), name="msgsync-replicas")

    async def stop(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        for replica in self.all:
            await replica.engine.dispose()

    async def check(self) -> None:
        await asyncio.gather(*(self._check(r) for r in self.all))

    async def _check(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(5), replica.driver() as driver:
                cursor = await driver.execute(_LAG_SQL)
                row = await cursor.fetchone()
        except (TimeoutError, psycopg.Error, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
            was = replica.serving
            replica.failed("unreachable")
            replica.lag_seconds = None
            if was:
                log.warning("replica %d stopped serving: %s", replica.number, exc)
            return
        lag = None if row is None else row[0]
        replica.lag_seconds = lag
        if lag is None:
            replica.failed("not in recovery: not a streaming replica")
        elif lag > self.max_lag:
            replica.failed(f"lagging more than {self.max_lag:g} s")
        else:
            if not replica.serving:
                log.info("replica %d serves (lag %.3f s)", replica.number, lag)
            replica.serving, replica.problem = True, ""

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_SECONDS)
            await self.check()

    def status(self) -> list[dict[str, Any]]:
        return [r.status() for r in self.all]


def replica_pool_size(settings: Settings) -> int:
    # Replicas take the sync pages that have entries; half the statement pool each.
    return max(2, settings.db_pool_size // 2)
