"""The accounts part of the store: the database's clock and the attempt counters.

The throttle's model is app.accounts.throttle's; here is only how a counter is kept. One
statement counts an attempt, so that concurrent attempts serialise on the row and never
lose a count: it counts the attempt, or, when the row's delay has not run out, changes
nothing. The row's fields all read the row as it was; a forgotten (expired) row starts
afresh at one attempt. After the count reaches the limit, the next attempt may come only
after 2**(count - limit) seconds (at most `most` doublings), capped at `cap`; the row is
forgotten `cap` seconds after that. Times are seconds since the epoch on the database's
clock: every process, on every host, compares delays against the same clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import ColumnElement

__all__ = ["AccountsStore"]


class AccountsStore(Protocol):
    def clock(self) -> ColumnElement[datetime]:
        """The database's clock as a column, to read beside the rows a statement reads
        anyway (the time at no round trip of its own), and a value to write."""
        ...

    async def count_attempt(self, key: str, limit: int, cap: int, most: int) -> float | None:
        """Count one attempt against `key`: None when counted, else the seconds left
        until the key's delay runs out (nothing counted)."""
        ...

    async def clear_attempts(self, key: str) -> None: ...

    async def purge_attempts(self) -> None:
        """Delete the counters that have expired."""
        ...
