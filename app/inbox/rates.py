"""Per-key rate limits (token buckets), kept in the process's memory.

Used for the per-user send rate (MSGSYNC_SEND_RATE, MSGSYNC_SEND_BURST): see docs/abuse.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.errors import AppError

__all__ = ["RateLimit", "retry_after", "stored_or_refused"]

T = TypeVar("T")

# How often full buckets are forgotten, in seconds: a user who stopped sending costs nothing.
_PRUNE_EVERY = 60.0


class RateLimit:
    """A token bucket per key: `rate` tokens a second, at most `burst` held.

    Each bucket is kept as one number, the time at which it would be full again (the
    generic cell rate algorithm's "theoretical arrival time"): taking a token moves it
    1/rate later, and a token is there when that time is at most burst/rate ahead. One
    float per key and one dictionary look-up and store per call, so that the check costs
    a send next to nothing. A refused call changes nothing: a client that keeps knocking
    does not push its own wait further.
    """

    __slots__ = ("_clock", "_full_at", "_interval", "_next_prune", "_window")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self._interval = 1.0 / rate
        self._window = burst * self._interval
        self._clock = clock
        self._full_at: dict[str, float] = {}
        self._next_prune = clock() + _PRUNE_EVERY

    def take(self, key: str) -> float:
        """Takes a token for `key`: 0.0 when there was one, else the seconds until there
        is one (nothing taken)."""
        now = self._clock()
        full_at = self._full_at.get(key, now)
        after = (full_at if full_at > now else now) + self._interval
        ahead = after - now
        if ahead > self._window:
            return ahead - self._window
        self._full_at[key] = after
        if now >= self._next_prune:
            self._prune(now)
        return 0.0

    def __len__(self) -> int:
        """The keys with a bucket that is not full (the others are forgotten)."""
        return len(self._full_at)

    def _prune(self, now: float) -> None:
        self._next_prune = now + _PRUNE_EVERY
        full = [key for key, full_at in self._full_at.items() if full_at <= now]
        for key in full:
            del self._full_at[key]


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1 (the header takes no fractions)."""
    return str(max(1, math.ceil(seconds)))


async def stored_or_refused(
    wait: float, client_msg_id: str | None, stored: Callable[[str], Awaitable[T | None]]
) -> T:
    """A send over the rate: 429 too_many_requests, unless it is a retry of a message
    already stored (`stored(client_msg_id)`), which is answered with the first result as
    ever, so that a client retrying after a lost answer learns that its message went
    through rather than being told to wait. The look-up costs a statement only when the
    sender is over the rate."""
    if client_msg_id is not None:
        found = await stored(client_msg_id)
        if found is not None:
            return found
    raise AppError(
        429,
        "too_many_requests",
        "too many messages sent; retry after Retry-After seconds",
        headers={"Retry-After": retry_after(wait)},
    )
