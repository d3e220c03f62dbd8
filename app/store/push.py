"""The push part of the store: lease due pushers, read what they have not seen, settle, and
record how far devices have synced.

A lease outlives any leased push's wait and request (app.push.worker): only a dead process
lets one expire, and another process then repeats that push.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

__all__ = ["Lease", "Pending", "PushStore", "Settle", "fold_unseen"]


@dataclass(slots=True)
class Lease:
    app_id: str
    pushkey: str
    user_id: str
    gateway_url: str
    format: str
    data: str
    created_at: datetime
    seen: int  # max(synced, acked): what the device has already
    floor: int  # max(pushed, seen): everything at or below needs no push
    attempts: int
    failing_since: datetime | None


@dataclass(slots=True)
class Pending:
    latest: int = 0
    unread: int = 0
    oldest_at: datetime | None = None  # the oldest message above the floor
    # (message id, sender, room), the newest above the floor; the room is the conversation
    # as the recipient names it: the peer, or the group of a group message.
    newest: tuple[int, str, str] | None = None


@dataclass(slots=True)
class Settle:
    """The new state of one leased pusher; None fields are left as they are."""

    app_id: str
    pushkey: str
    pushed_version: int | None = None
    due_at: datetime | None = None
    attempts: int = 0
    failing_since: datetime | None = None
    delete: bool = False


class PushStore(Protocol):
    async def lease_and_read(
        self, now: datetime, until: datetime, limit: int
    ) -> tuple[list[tuple[Lease, Pending]], datetime | None]:
        """At most `limit` due pushers (the longest overdue first, none leased by another
        round) leased until `until`, each with what it has not seen: the messages from
        others above what its device has, read in one snapshot, so every entry up to
        `latest` is visible (a user's versions commit in order). Also the earliest due
        time still ahead, if any. The sender's own devices are never pushed for the
        sender's own message."""
        ...

    async def settle(self, settled: Sequence[Settle], now: datetime) -> None:
        """A round's outcomes, one per pusher, in key order. pushed_version never moves
        back; a message that arrived during the push (`news`) makes the pusher due at
        once rather than settled."""
        ...

    async def record_synced(self, seen: Sequence[tuple[str, int]]) -> None:
        """Raise each device's pushers' synced_version to the version given (never lower)."""
        ...


def fold_unseen(leases: list[Lease], rows: list[tuple[Any, ...]]) -> list[Pending]:
    """Rows of (lease index, latest version, then one message above what the device has
    seen or NULLs), in version order per lease, into one Pending per lease."""
    found = [Pending() for _ in leases]
    for index, latest, version, created_at, message_id, sender, room in rows:
        one, leased = found[index], leases[index]
        one.latest = latest or 0  # no such user (gone): nothing to settle above 0
        if version is None or version <= leased.seen:
            continue
        one.unread += 1
        if version > leased.floor:
            if one.oldest_at is None:
                one.oldest_at = created_at
            one.newest = (message_id, sender, room)
    return found
