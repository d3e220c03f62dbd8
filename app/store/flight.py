"""Sharing work among the concurrent requests of one process.

A message to a large group wakes every online member at once, and each then reads the same
page of the group's log and covers its news (app.store.groups): hundreds of identical
queries and of one-row transactions on the same group row. Two ways to do that work once:

- `SingleFlight`: concurrent calls with the same key share one run; the first starts it,
  the others await its result. Nothing is kept after it returns: a call that starts after
  the run ended runs anew, so no answer is older than the call that asked for it.
- `GroupCommit`: items of one key that arrive while a commit of that key runs wait and go
  together in the next commit, one at a time per key; each waiter gets its commit's result.

Both run the shared work in a task of its own, so a caller that gives up (its request is
cancelled) does not cancel the others' work.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from app.store.groups import EventRow

__all__ = ["GroupCommit", "SharedGroupReads", "SingleFlight"]

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


def _retrieve(task: asyncio.Task[object]) -> None:
    # Every caller may have given up: the outcome is read so that it is not reported unread.
    if not task.cancelled():
        task.exception()


class SingleFlight(Generic[K, R]):
    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Task[R]] = {}

    async def run(self, key: K, call: Callable[[K], Awaitable[R]]) -> R:
        """`call(key)`, or the result of the run of it already under way."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.create_task(self._fly(key, call))
            flight.add_done_callback(_retrieve)
            self._flights[key] = flight
        return await asyncio.shield(flight)

    async def _fly(self, key: K, call: Callable[[K], Awaitable[R]]) -> R:
        try:
            return await call(key)
        finally:
            # Gone before the result is handed out: a later call never joins a finished run.
            del self._flights[key]


class GroupCommit(Generic[K, I, R]):
    """`commit(key, items)` runs for the items queued under `key`, one run per key at a
    time; the items that arrive meanwhile form the next batch."""

    def __init__(self, commit: Callable[[K, Sequence[I]], Awaitable[R]]) -> None:
        self._commit = commit
        # A key is here while its batches are being committed: its items not yet taken.
        self._queued: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, key: K, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        queued = self._queued.get(key)
        if queued is not None:
            queued.append((item, future))
        else:
            self._queued[key] = [(item, future)]
            task = asyncio.create_task(self._drain(key))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await future

    async def _drain(self, key: K) -> None:
        batch: list[tuple[I, asyncio.Future[R]]] = []
        try:
            while batch := self._queued[key]:
                self._queued[key] = []
                try:
                    result = await self._commit(key, [item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(result)
                batch = []
        finally:
            # Emptied, or this task was cancelled (the loop is closing): nobody waits forever.
            left = batch + self._queued.pop(key, [])
            for _, future in left:
                if not future.done():
                    future.cancel()


class SharedGroupReads(ABC):
    """The groups store's reads of a large group, shared among one process's requests
    whichever database holds them: covers of one group go as one `cover_batch`, identical
    log reads as one `read_events`. Each store implements those two."""

    def __init__(self) -> None:
        self._covers: GroupCommit[str, tuple[str, int], int | None] = GroupCommit(self.cover_batch)
        self._reads: SingleFlight[tuple[str, int, int], list[EventRow]] = SingleFlight()

    async def cover(self, group_id: str, user_id: str, through_seq: int) -> int:
        latest = await self._covers.submit(group_id, (user_id, through_seq))
        return through_seq if latest is None else latest

    async def events(self, group_id: str, after_seq: int, limit: int) -> list[EventRow]:
        # A list of its own for each caller: the run's is shared by all of them.
        return list(await self._reads.run((group_id, after_seq, limit), self._read_page))

    async def _read_page(self, key: tuple[str, int, int]) -> list[EventRow]:
        return await self.read_events(*key)

    @abstractmethod
    async def cover_batch(self, group_id: str, readers: Sequence[tuple[str, int]]) -> int | None:
        """See app.store.groups.GroupStore.cover_batch."""

    @abstractmethod
    async def read_events(self, group_id: str, after_seq: int, limit: int) -> list[EventRow]:
        """One page of the group's log after `after_seq`, in seq order, from the database."""
