"""The values an app sees: messages, stream entries, pages, groups, outbox items, the session."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "Conversation",
    "Entry",
    "EventsPage",
    "Group",
    "GroupEvent",
    "GroupMember",
    "GroupRead",
    "GroupState",
    "Message",
    "OutboxItem",
    "OutboxState",
    "Page",
    "ReadReceipt",
    "Recall",
    "Session",
]


@dataclass(frozen=True)
class Session:
    server: str
    user_id: str
    device_id: str
    access_token: str


@dataclass(frozen=True)
class Message:
    """A direct message (`recipient` set) or a group message (`group_id` and `seq` set)."""

    id: int
    sender: str
    recipient: str | None
    body: str
    client_msg_id: str | None
    created_at: str
    recalled_at: str | None
    group_id: str | None = None
    seq: int | None = None  # the group event's seq

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        # On the catch-up's hot path (one call per entry): the server's JSON has these
        # types already, so positional and without conversions.
        get = data.get
        return cls(
            data["id"],
            data["from"],
            get("to"),
            data["body"],
            get("client_msg_id"),
            data["created_at"],
            get("recalled_at"),
            get("group_id"),
            get("seq"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": self.sender,
            "to": self.recipient,
            "body": self.body,
            "client_msg_id": self.client_msg_id,
            "created_at": self.created_at,
            "recalled_at": self.recalled_at,
            "group_id": self.group_id,
            "seq": self.seq,
        }

    def peer_of(self, user_id: str) -> str | None:
        """The other party of a direct message; None for a group message."""
        if self.group_id is not None:
            return None
        return self.recipient if self.sender == user_id else self.sender


@dataclass(frozen=True)
class Recall:
    message_id: int
    sender: str
    recipient: str | None  # None for a group message
    recalled_at: str
    group_id: str | None = None


@dataclass(frozen=True)
class ReadReceipt:
    """How far `reader` has read the direct conversation with `peer`."""

    reader: str
    peer: str
    up_to_message_id: int


@dataclass(frozen=True)
class GroupRead:
    """How far one of the user's own devices has read a group (sent to the reader only)."""

    reader: str
    group_id: str
    up_to_seq: int


@dataclass(frozen=True)
class Group:
    """A group as the server shows it to the caller (`joined_seq`, `read_seq`: the caller's)."""

    group_id: str
    title: str
    owner: str | None
    member_count: int
    latest_seq: int
    joined_seq: int
    read_seq: int
    large: bool
    created_at: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Group:
        owner = data.get("owner")
        return cls(
            group_id=str(data["group_id"]),
            title=str(data["title"]),
            owner=None if owner is None else str(owner),
            member_count=int(data["member_count"]),
            latest_seq=int(data["latest_seq"]),
            joined_seq=int(data["joined_seq"]),
            read_seq=int(data["read_seq"]),
            large=bool(data["large"]),
            created_at=str(data["created_at"]),
        )


@dataclass(frozen=True)
class GroupMember:
    user_id: str
    role: str  # "owner", "admin" or "member"
    joined_seq: int = 0
    read_seq: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupMember:
        return cls(
            str(data["user_id"]),
            str(data["role"]),
            int(data.get("joined_seq") or 0),
            int(data.get("read_seq") or 0),
        )


@dataclass(frozen=True)
class GroupEvent:
    """One change of a group, at the group's next `seq`: `created`, `message` (data: a
    Message), `recall` (`{"message_id"}`), `member_added`, `member_removed`, `member_left`
    (`{"user_id"}`), `title_changed` (`{"title"}`) or `role_changed` (`{"user_id", "role"}`);
    unknown kinds are kept and skipped."""

    group_id: str
    seq: int
    kind: str
    created_at: str
    actor: str
    data: dict[str, Any]

    @classmethod
    def from_json(cls, group_id: str, data: dict[str, Any]) -> GroupEvent:
        return cls(
            group_id,
            int(data["seq"]),
            str(data["kind"]),
            str(data["created_at"]),
            str(data.get("actor") or ""),
            dict(data.get("data") or {}),
        )


@dataclass(frozen=True)
class EventsPage:
    events: list[GroupEvent]
    next_after_seq: int
    latest_seq: int
    has_more: bool

    @classmethod
    def from_json(cls, group_id: str, data: dict[str, Any]) -> EventsPage:
        return cls(
            [GroupEvent.from_json(group_id, e) for e in data["events"]],
            int(data["next_after_seq"]),
            int(data["latest_seq"]),
            bool(data["has_more"]),
        )


@dataclass(frozen=True)
class GroupState:
    """What this device knows of one of the user's groups.

    `seq` is the log position: every event of the group up to it is applied here. Events
    seen above it (after a gap, or announced by `group_news`) raise `news_seq`; while
    `news_seq > seq` the client reads the log from `seq`. `members` maps user id to role,
    complete once `stale` is false (a refresh from the server fetched the list); `title` is
    "" and `role` None until then when the group was first seen through an event."""

    group_id: str
    title: str = ""
    owner: str | None = None
    role: str | None = None
    seq: int = 0
    news_seq: int = 0
    read_seq: int = 0
    stale: bool = True
    members: dict[str, str] = field(default_factory=dict)

    @property
    def pending_news(self) -> bool:
        return self.news_seq > self.seq


@dataclass(frozen=True)
class Conversation:
    """A line of the server's conversation list: a direct chat (`peer`) or a group."""

    kind: str  # "direct" or "group"
    peer: str | None
    group_id: str | None
    title: str | None
    last_message: Message | None
    unread_count: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        last = data.get("last_message")
        return cls(
            str(data.get("kind") or "direct"),
            data.get("peer"),
            data.get("group_id"),
            data.get("title"),
            None if last is None else Message.from_json(last),
            int(data.get("unread_count") or 0),
        )


@dataclass(frozen=True)
class Entry:
    """One change of the user's stream, in version order."""

    version: int
    # "message", "recall", "read", "group" or "group_news"; unknown kinds are kept and skipped
    kind: str
    created_at: str
    data: dict[str, Any]
    # Unique to this entry write: sent back as `since_id`, it lets the server say when the
    # history this device has seen was rewritten (None from a server that has no ids).
    id: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        entry_id = data.get("id")
        return cls(
            int(data["version"]),
            str(data["kind"]),
            str(data["created_at"]),
            data["data"],
            str(entry_id) if entry_id is not None else None,
        )


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    next_since: int
    latest_version: int
    has_more: bool
    history_fallback: bool

    @property
    def cursor_id(self) -> str | None:
        """The id of the entry at `next_since`, when this page holds it (the `since_id` to
        send with `since=next_since`); None when the cursor moved past the last entry."""
        if self.entries and self.entries[-1].version == self.next_since:
            return self.entries[-1].id
        return None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Page:
        return cls(
            [Entry.from_json(e) for e in data["entries"]],
            int(data["next_since"]),
            int(data["latest_version"]),
            bool(data["has_more"]),
            bool(data["history_fallback"]),
        )


class OutboxState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True)
class OutboxItem:
    """A send: to a user (`to`) or, with `group_id` set, to a group (`to` is then "")."""

    client_msg_id: str
    to: str
    body: str
    state: OutboxState
    message_id: int | None = None
    error: str | None = None
    group_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "client_msg_id": self.client_msg_id,
            "to": self.to,
            "body": self.body,
            "state": self.state.value,
            "message_id": self.message_id,
        }
        if self.group_id is not None:
            record["group_id"] = self.group_id
        return record
