"""What the groups domain (app.groups) asks of the database.

Writes go through a `GroupWork`: one transaction that takes the locks in the one order all
writers share, **the group's row first, then the users' rows in user-id order** (direct
sends lock only users, in the same order, so no two writers ever wait on each other in a
cycle), then member rows. The group row's lock serialises every change of one group, which
is what makes its `seq` gap-free and committed in order; the users' locks do the same for
each member's versions, exactly as for a direct send.

Reads (`GroupStore.view`, `members`, `events`, ...) take no lock.

Large groups (app.groups.members): an event is logged once; the members who hold no
uncovered `group_news` entry (`news_seq` NULL) get one, and the others nothing. Their
users' rows are locked in the same order as any recipients'. A read of the log that reached
the latest seq covers the reader's news (`GroupStore.cover`) under a share lock of the group
row, so it is ordered against every event: an event either committed before the cover
(and the read must reach it) or runs after it and finds the news covered, writing a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "Appended",
    "Conflict",
    "ConversationItem",
    "EventRow",
    "GroupRow",
    "GroupStore",
    "GroupWork",
    "MemberRow",
    "MessageRow",
    "SentMessage",
]


class Conflict(Exception):
    """A unique key refused a row: the same client_group_id (or client_msg_id) committed
    first. The work is rolled back; the caller looks up the first result."""


@dataclass(frozen=True, slots=True)
class GroupRow:
    group_id: str
    title: str
    owner: str | None
    creator: str
    client_group_id: str | None
    latest_seq: int
    member_count: int
    large: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MemberRow:
    user_id: str
    role: str
    joined_seq: int
    read_seq: int
    # The seq of the member's uncovered group_news entry; None: it holds none.
    news_seq: int | None = None


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: int
    sender: str
    body: str
    client_msg_id: str | None
    created_at: datetime
    recalled_at: datetime | None
    group_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    kind: str
    actor: str
    created_at: datetime
    data: str  # the event's `data`, as JSON text


@dataclass(frozen=True, slots=True)
class Appended:
    """An event written: its seq and time, and the version each recipient took for it."""

    seq: int
    created_at: datetime
    versions: dict[str, int]
    # Large groups: who got a group_news entry for it (not in `versions`).
    noticed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A group message stored (or found stored, for a retry)."""

    message: dict[str, Any]  # the contract's Message
    version: int  # the sender's version for it
    members: list[str]  # who got an entry (empty for a retry); group_news in a large group


@dataclass(frozen=True, slots=True)
class ConversationItem:
    """A group as a line of the conversation list."""

    group_id: str
    title: str
    read_seq: int
    last_message: MessageRow
    unread_count: int  # messages from others above read_seq, recalled ones not counted


class GroupWork(Protocol):
    """One write transaction over a group; every method runs inside it."""

    async def lock(self, group_id: str) -> GroupRow | None:
        """Lock the group's row (the first lock of the order) and read it."""

    async def create(
        self, group_id: str, title: str, creator: str, client_group_id: str | None
    ) -> GroupRow:
        """Insert a new group row (locked: it is ours until commit)."""

    async def existing_users(self, user_ids: Iterable[str]) -> set[str]:
        """Which of these users exist."""

    async def lock_users(self, user_ids: Iterable[str], *, news: bool = False) -> None:
        """Lock these users' rows in user-id order, before any event of the transaction:
        each event then bumps users already held, so the order holds across events. With
        `news`, the users of the members who hold no uncovered news too (the ones a large
        group's event will write to), all in one user-id order."""

    async def member(self, user_id: str) -> MemberRow | None: ...

    async def members(self) -> list[MemberRow]:
        """Every member, by user id (small groups: at most the fan-out limit)."""

    async def members_among(self, user_ids: Iterable[str]) -> set[str]:
        """Which of these users are members (one query, whatever the group's size)."""

    async def heir(self, leaving: str) -> MemberRow | None:
        """The longest-standing admin, else member, other than `leaving` (ties: by user
        id): one ordered query."""

    async def add_members(self, rows: Sequence[MemberRow]) -> None:
        """Insert member rows (holding no news)."""

    async def add_large(self, actor: str, user_ids: Sequence[str], first_seq: int) -> list[str]:
        """Add these users to a large group, one `member_added` event each (seqs from
        `first_seq`, in the order given), set-based: each added gets its event as a `group`
        entry and joins at it; each but the last holds news from the next event (a
        `group_news` entry at that seq); the members holding no news get one at
        `first_seq`. The users' rows are already locked (lock_users with news). Who among
        the members got news."""

    async def delete_member(self, user_id: str) -> None: ...

    async def set_role(self, user_id: str, role: str) -> None: ...

    async def update_group(
        self, *, title: str, owner: str | None, member_count: int, large: bool
    ) -> None: ...

    async def append_event(
        self,
        kind: str,
        actor: str,
        data: dict[str, Any],
        recipients: Iterable[str],
        *,
        message_id: int | None = None,
        entry: dict[str, Any] | None = None,
        news: bool = False,
    ) -> Appended:
        """The group's next seq for an event, logged, and one stream entry per recipient at
        its next version: a `group` entry (`{"group_id", "event"}`), or, with `entry`, a
        `recall` entry holding `entry`. With `news` (a large group), every other member who
        holds no uncovered news gets a `group_news` entry `{"group_id", "seq"}` and
        news_seq = seq; the members holding news get nothing."""

    async def recall(self, message_id: int) -> datetime | None:
        """Clear a group message's body at the database's time; None when it was already
        recalled (recalled_at is set once)."""

    async def set_event_data(self, seq: int, data: dict[str, Any]) -> None:
        """Rewrite a logged event's data (a recalled message shows its empty body)."""

    async def now(self) -> datetime: ...

    async def rollback(self) -> None:
        """Undo everything so far (versions and seqs are given back) and end the work."""


class GroupStore(Protocol):
    def work(self) -> AbstractAsyncContextManager[GroupWork]:
        """A write transaction: committed when the block ends, rolled back on an error."""

    async def find_created(self, creator: str, client_group_id: str) -> str | None:
        """The group that `creator` made with this client_group_id, if any."""

    async def view(self, group_id: str, user_id: str) -> tuple[GroupRow, MemberRow] | None:
        """The group and the caller's membership; None when the caller is not a member."""

    async def members(self, group_id: str, after: str | None, limit: int) -> list[MemberRow]: ...

    async def events(self, group_id: str, after_seq: int, limit: int) -> list[EventRow]:
        """The log after `after_seq`, in seq order. Concurrent calls with the same arguments
        in one process share one query (the members a message woke read the same page);
        nothing is kept once it has answered, so no page predates its call."""

    async def send(
        self,
        group_id: str,
        sender: str,
        body: str,
        client_msg_id: str | None,
        push_wait: float | None,
    ) -> SentMessage | None:
        """Store a group message in one transaction: the group's lock, then the members'
        rows in user-id order; the next seq, the message row, its logged event, one
        `message` entry per member (the sender's too) at each member's next version, and,
        with push on, the other members' pushers marked due. In a large group, no `message`
        entry: a `group_news` entry for each member holding no uncovered news (the sender
        is one like any other), only their users locked, and `version` is the sender's
        latest. None when the group does not exist or the sender is not a member. A retry
        (same client_msg_id) is answered with the stored message and no members."""

    async def cover(self, group_id: str, user_id: str, through_seq: int) -> int:
        """A read of the log reached `through_seq`: under a share lock of the group's row
        (it waits for an event in flight), read the committed latest seq and, only if it is
        at most `through_seq`, clear the member's news (news_seq = NULL). The latest seq:
        above `through_seq`, nothing was cleared and the reader reads on.

        Covers of one group are committed together (`cover_batch`): those that arrive in
        this process while one batch runs form the next. Each reader's case is decided
        exactly as alone, against the one latest seq its batch read under the lock."""

    async def cover_batch(self, group_id: str, readers: Sequence[tuple[str, int]]) -> int | None:
        """The covers of several readers (user id, through_seq) in one transaction: the
        group's row share-locked (PostgreSQL; SQLite: one write transaction), its committed
        latest seq read once, and the news cleared, in one statement, of every reader whose
        read reached it (through_seq >= latest). The latest seq; None: no such group."""

    async def existing_send(self, sender: str, client_msg_id: str) -> tuple[MessageRow, int] | None:
        """The group message `sender` sent with this client_msg_id and the sender's version
        for it; None when there is none (or it was a direct message)."""

    async def message(self, message_id: int) -> MessageRow | None:
        """A group message; None for a direct one or none at all."""

    async def mark_read(
        self, group_id: str, reader: str, up_to_seq: int, data: dict[str, Any]
    ) -> tuple[int, int, bool] | None:
        """Move the reader's cursor to up_to_seq if forward: (read_seq, version, moved),
        with a `read` entry holding `data` for the reader alone when it moved (under the
        reader's lock: the cursor never moves back). None: not a member."""

    async def conversations(
        self, user_id: str, before: int | None, limit: int
    ) -> list[ConversationItem]:
        """The user's groups that have a message, newest message first, below `before`
        (a message id), each with its unread count, read in one snapshot."""

    async def latest_version(self, user_id: str) -> int:
        """The user's latest version."""

    async def groups_of(self, user_id: str) -> list[tuple[str, int]]:
        """(group_id, latest_seq) of every group the user is a member of."""
