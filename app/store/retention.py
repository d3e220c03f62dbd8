"""The retention part of the store: one run at a time, and the users' locks a batch takes."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["AlreadyRunning", "RetentionStore"]


class AlreadyRunning(Exception):
    """Another retention run holds the lock on this database."""


class RetentionStore(Protocol):
    def run_lock(self, wait: bool) -> AbstractAsyncContextManager[None]:
        """Hold the database-wide retention lock for a run; raise AlreadyRunning when
        another run holds it, unless `wait`."""
        ...

    async def lock_users(self, session: AsyncSession, user_ids: Sequence[str]) -> None:
        """In `session`'s transaction, lock these users' rows under the lock rule
        (app/store/inbox.py), as a batch does before raising their floors: a send and the
        batch then lock in one global order and cannot wait on each other in a cycle."""
        ...
