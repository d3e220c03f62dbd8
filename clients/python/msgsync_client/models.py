"""The values an app sees: messages, stream entries, pages, outbox items, the session."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "Entry",
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
    id: int
    sender: str
    recipient: str
    body: str
    client_msg_id: str | None
    created_at: str
    recalled_at: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(
            id=int(data["id"]),
            sender=str(data["from"]),
            recipient=str(data["to"]),
            body=str(data["body"]),
            client_msg_id=data.get("client_msg_id"),
            created_at=str(data["created_at"]),
            recalled_at=data.get("recalled_at"),
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
        }

    def peer_of(self, user_id: str) -> str:
        return self.recipient if self.sender == user_id else self.sender


@dataclass(frozen=True)
class Recall:
    message_id: int
    sender: str
    recipient: str
    recalled_at: str


@dataclass(frozen=True)
class ReadReceipt:
    reader: str
    peer: str
    up_to_message_id: int


@dataclass(frozen=True)
class Entry:
    """One change of the user's stream, in version order."""

    version: int
    kind: str  # "message", "recall" or "read"; unknown kinds are kept and skipped
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
    client_msg_id: str
    to: str
    body: str
    state: OutboxState
    message_id: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "client_msg_id": self.client_msg_id,
            "to": self.to,
            "body": self.body,
            "state": self.state.value,
            "message_id": self.message_id,
        }
