"""The inbox part of the store: sends, sync pages, version bumps and ack cursors.

The lock rule, kept by both implementations: a transaction that bumps or locks users'
rows locks them in user-id order (the database's collation) and holds them to commit.
Crossing sends (A to B while B sends to A) then queue instead of deadlocking, and a user's
versions commit in the order they were taken: no reader sees version V+1 committed while
V is still in flight, so a page read never skips an entry.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from sqlalchemy import Row, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.models import InboxEntry, Message, User
from app.errors import AppError
from app.inbox.messages import MESSAGE_COLUMNS, format_time, message_row_data

if TYPE_CHECKING:
    from app.db.engine import Database

__all__ = [
    "FetchedEntry",
    "InboxStore",
    "Outgoing",
    "Page",
    "Sent",
    "check_since",
    "derived_entry_id",
    "entry_id_text",
    "find_send",
    "history_entry_id",
    "read_page_in_transaction",
]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send. With `push_wait` (seconds until a push falls due,
    app.push.pushers.push_wait) the recipient's pushers are marked due in the same unit of
    work; None when push is off."""

    sender: str
    recipient: str
    body: str
    client_msg_id: str | None
    push_wait: float | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    """A stored message as its send answers: the contract's `Message`, the sender's new
    version, and whether this call stored it (False: an earlier send with the same
    client_msg_id did)."""

    message: dict[str, Any]
    version: int
    created: bool


@dataclass(frozen=True, slots=True)
class FetchedEntry:
    version: int
    kind: str
    created_at: datetime
    data: str  # the entry's JSON payload, as stored
    id: str  # the entry id of the contract (see entry_id_text)


def entry_id_text(value: uuid.UUID | str) -> str:
    """An inbox row's entry id as clients see it: 32 lowercase hex digits. The drivers hand
    a UUID (PostgreSQL's uuid, SQLAlchemy's Uuid) or, on raw SQLite, the stored hex."""
    return value.hex if isinstance(value, uuid.UUID) else value.replace("-", "").lower()


@dataclass(frozen=True, slots=True)
class Page:
    entries: Sequence[FetchedEntry]
    next_since: int
    latest_version: int
    has_more: bool
    history_fallback: bool
    # The floor, when this page reached the end of a pruned range: the groups' news for
    # that range belongs there (app.groups.views.with_group_news).
    pruned_through: int | None = None


def check_since(
    since: int,
    since_id: str | None,
    latest: int,
    floor: int,
    stored_id: uuid.UUID | str | None,
) -> None:
    """Whether the client's cursor still names the server's history; every page read
    calls this with what it read in the page's snapshot.

    409 since_ahead: the user's history ends before `since` (a restore, a promoted replica
    that missed commits). 409 history_rewritten: the entry the client saw at `since` (its
    id is `since_id`) is not the one stored there now: the versions it has seen were handed
    to other changes. At or below the floor the entry is gone, so there is nothing to
    compare (`stored_id` None): the check is skipped.
    """
    if since > latest:
        raise AppError(
            409,
            "since_ahead",
            f"since={since} is ahead of the latest version {latest}",
            latest_version=latest,
        )
    if (
        since_id is not None
        and since > floor
        and stored_id is not None
        and entry_id_text(stored_id) != since_id
    ):
        raise AppError(
            409,
            "history_rewritten",
            f"the entry at version {since} is not the one with id {since_id}: "
            "the history was rewritten (a restore or a failover); sync again from 0",
            latest_version=latest,
        )


class InboxStore(Protocol):
    async def send(self, outgoing: Outgoing) -> Sent | None:
        """One unit of work: bump both parties' versions (the lock rule), store the message,
        one inbox entry per party and both conversation rows, and mark the recipient's
        pushers due (with push on). None when a party does not exist: no version is taken.
        A send repeating a stored (sender, client_msg_id) answers the stored one."""
        ...

    async def find_send(self, sender: str, client_msg_id: str) -> Sent | None:
        """The stored message `sender` sent with `client_msg_id`, as its send answered."""
        ...

    async def read_page(
        self,
        user_id: str,
        since: int,
        limit: int,
        *,
        since_id: str | None = None,
        primary: bool = False,
    ) -> Page:
        """Everything newer than `since`, oldest first, at most `limit` entries, in one
        snapshot (floor, latest version and entries together: a retention run committing
        between reads must not make the page skip entries). Below the floor, the messages
        from the history index, then the store from the floor on (`history_fallback`).
        `primary`: never from a replica (a woken long-poll). 409 since_ahead past latest;
        409 history_rewritten when the entry at `since` is not the one `since_id` names
        (check_since, in the same snapshot)."""
        ...

    async def conversations(self, user_id: str, limit: int, before: int | None) -> dict[str, Any]:
        """The user's direct conversations by newest message first, below `before` (a
        last_message_id), each with its exact unread count, in one snapshot (on a replica
        when one serves): {"conversations": [...], "next_before"}."""
        ...

    async def bump_versions(self, session: AsyncSession, user_ids: Iterable[str]) -> dict[str, int]:
        """In `session`'s transaction: take the next version of each user that exists,
        under the lock rule (rows held to commit)."""
        ...

    async def advance_cursors(self, acks: Sequence[tuple[str, int]]) -> dict[str, tuple[int, int]]:
        """One transaction for a batch of (device, version) acks: each existing device's
        cursor becomes max(cursor, highest acked version not ahead of its user's latest).
        Returns {device: (cursor after the batch, user's latest version)} for the devices
        that exist."""
        ...


async def read_page_in_transaction(
    sessions: async_sessionmaker[AsyncSession],
    user_id: str,
    since: int,
    limit: int,
    since_id: str | None = None,
) -> Page:
    """read_page as a read-only transaction of separate statements, the same on every
    database: SQLite's only path, and PostgreSQL's below the floor (the history fallback)."""
    async with sessions() as session, session.begin():
        user = (
            await session.execute(
                select(User.latest_version, User.floor_version).where(User.user_id == user_id)
            )
        ).one()
        latest, floor = user.latest_version, user.floor_version
        stored_id = None
        if since_id is not None and floor < since <= latest:
            stored_id = await session.scalar(
                select(InboxEntry.entry_id).where(
                    InboxEntry.user_id == user_id, InboxEntry.version == since
                )
            )
        check_since(since, since_id, latest, floor, stored_id)
        entries: list[FetchedEntry] = []
        fallback = since < floor
        position = since
        if fallback:
            entries = await _from_history(session, user_id, since, floor, limit)
            if len(entries) < limit:
                # The pruned range is exhausted; what it held beyond these were operation
                # entries, whose effects are already on the message rows.
                position = floor
        if len(entries) < limit and position >= floor:
            rows = await session.execute(
                select(
                    InboxEntry.version,
                    InboxEntry.kind,
                    InboxEntry.created_at,
                    InboxEntry.data,
                    InboxEntry.entry_id,
                )
                .where(InboxEntry.user_id == user_id, InboxEntry.version > position)
                .order_by(InboxEntry.version)
                .limit(limit - len(entries))
            )
            entries.extend(FetchedEntry(v, k, c, d, entry_id_text(i)) for v, k, c, d, i in rows)
    next_since = max(entries[-1].version if entries else position, position)
    pruned_through = floor if fallback and position == floor else None
    return Page(entries, next_since, latest, next_since < latest, fallback, pruned_through)


async def _from_history(
    session: AsyncSession, user_id: str, since: int, floor: int, limit: int
) -> list[FetchedEntry]:
    """The user's messages with a version in (since, floor], from the index table."""
    as_sender = select(*MESSAGE_COLUMNS, Message.sender_version.label("version")).where(
        Message.sender == user_id,
        # Group messages come back through the group log (group_news), not from here.
        Message.group_id.is_(None),
        Message.sender_version > since,
        Message.sender_version <= floor,
    )
    as_recipient = select(*MESSAGE_COLUMNS, Message.recipient_version.label("version")).where(
        Message.recipient == user_id,
        Message.sender != user_id,  # a note to oneself is already in the first half
        Message.recipient_version > since,
        Message.recipient_version <= floor,
    )
    both = union_all(as_sender, as_recipient).subquery()
    rows = await session.execute(select(both).order_by(both.c.version).limit(limit))
    return [_history_entry(row) for row in rows]


def _history_entry(row: Row[Any]) -> FetchedEntry:
    data = orjson.dumps(message_row_data(row)).decode()
    return FetchedEntry(
        row.version, "message", row.created_at, data, history_entry_id(row, row.version)
    )


def derived_entry_id(prefix: str, *parts: str) -> str:
    """The id of an entry that has no inbox row of its own to draw one (served from the
    index table, or made at read time): 32 characters, the same for the same `parts` on
    every re-read, starting with `prefix`, which no drawn id (hex) does."""
    key = "\x1f".join(parts)
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:31]


def history_entry_id(row: Any, version: int) -> str:
    """The id of an entry served from the index table below the floor.

    Its inbox row is gone, and with it the id drawn for it: this one is derived from what
    the message row holds for good (the same on every re-read, recalled or not), and starts
    with `h`, which no drawn id (hex) does. A restore or a failover that gives the message
    id and version to another message gives it another sender, recipient or creation time
    to the microsecond, hence another id. The check of `since_id` never compares against
    it (it is skipped at or below the floor); should a restore lower the floor under a
    cursor that stands on such an entry, the inbox entry there has a drawn id, so the
    client is sent back to 0: a 409 that may be needless, never one that is missed.
    """
    return derived_entry_id(
        "h",
        str(row.id),
        str(version),
        row.sender,
        row.recipient or "",
        format_time(row.created_at),
        row.client_msg_id or "",
    )


async def find_send(db: Database, sender: str, client_msg_id: str) -> Sent | None:
    """InboxStore.find_send, the same on every database."""
    async with db.statement() as conn:
        row = (
            await conn.execute(
                select(*MESSAGE_COLUMNS, Message.sender_version).where(
                    Message.sender == sender,
                    Message.client_msg_id == client_msg_id,
                    # A group message's key is not a direct send's (app.groups.messages).
                    Message.group_id.is_(None),
                )
            )
        ).first()
    if row is None:
        return None
    return Sent(message_row_data(row), row.sender_version, created=False)
