"""Wake-ups for long-polls: the in-process notifier (one process, SQLite or tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["LocalNotifier", "Notifier", "Waiter"]


class Waiter:
    """One long-poll's interest in one user. Cheap: a future and two references."""

    __slots__ = ("_future", "user_id")

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    @property
    def woken(self) -> bool:
        return self._future.done()

    def rearm(self) -> None:
        """Forget past wake-ups; call it before the read that decides whether to wait."""
        if self._future.done():
            self._future = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float) -> bool:
        """True when woken, False when `timeout` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._future)
        except TimeoutError:
            return False
        return True

    @property
    def future(self) -> asyncio.Future[None]:
        return self._future


class Notifier:
    """Waiters by user, woken after commit. This class alone serves one process."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[Waiter]] = {}
        self.closing = False

    async def start(self) -> None:
        """Nothing to start in-process."""

    async def stop(self) -> None:
        self.close()

    def subscribe(self, user_id: str) -> Waiter:
        waiter = Waiter(user_id)
        self._waiters.setdefault(user_id, set()).add(waiter)
        if self.closing:
            waiter.wake()
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        group = self._waiters.get(waiter.user_id)
        if group is not None:
            group.discard(waiter)
            if not group:
                del self._waiters[waiter.user_id]

    def wake_local(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            for waiter in self._waiters.get(user_id, ()):
                waiter.wake()

    def wake_all(self) -> None:
        for group in self._waiters.values():
            for waiter in group:
                waiter.wake()

    def notify(self, user_ids: Iterable[str]) -> None:
        """Publish that these users have news. Call only after the change committed."""
        self.wake_local(user_ids)

    def close(self) -> None:
        """Shutting down: answer every waiting long-poll now, and new ones at once."""
        self.closing = True
        self.wake_all()

    @property
    def waiting(self) -> int:
        return sum(len(group) for group in self._waiters.values())


LocalNotifier = Notifier
