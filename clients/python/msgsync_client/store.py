"""The local store: what the device knows, and the cursor that says up to where.

A store applies a page's entries and the page's cursor in one local transaction, so that a
crash leaves either both or neither: restarting from the stored cursor then neither skips
nor re-applies an entry (see docs/client-algorithm.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from msgsync_client.models import (
    Entry,
    Message,
    OutboxItem,
    OutboxState,
    Page,
    ReadReceipt,
    Recall,
    Session,
)

__all__ = ["Applied", "MemoryStore", "Store"]


@dataclass
class Applied:
    """What one page changed, for the app's callbacks (after the local commit)."""

    messages: list[Message] = field(default_factory=list)
    recalls: list[Recall] = field(default_factory=list)
    reads: list[ReadReceipt] = field(default_factory=list)
    count: int = 0


class Store(Protocol):
    def session(self) -> Session | None: ...
    def set_session(self, session: Session | None) -> None: ...
    def cursor(self) -> int: ...
    def cursor_id(self) -> str | None:
        """The id of the entry at the cursor (sent as `since_id`), None when unknown."""
        ...

    def acked(self) -> int: ...
    def set_acked(self, version: int) -> None: ...
    def gaps(self) -> int: ...

    def apply_page(self, page: Page) -> Applied:
        """Apply the entries above the cursor, in version order, and store
        `page.next_since` as the cursor with the id of the entry there (`page.cursor_id`;
        and count a gap for a history_fallback page), all in one local transaction."""
        ...

    def reset_stream(self) -> None:
        """since_ahead / history_rewritten recovery: forget the stream (messages, receipts,
        the applied log) and set the cursor to 0, in one transaction; the outbox and the
        session stay."""
        ...

    def clear(self) -> None:
        """Logout, or a login by another account: forget everything the store holds (the
        session and its token, the stream, the cursor, the read receipts, the outbox, the
        counters) in one transaction. A crash leaves the old store or an empty one, never a
        cursor without its stream or an outbox without its user."""
        ...

    def add_outbox(self, item: OutboxItem) -> None: ...
    def update_outbox(self, item: OutboxItem) -> None: ...
    def outbox(self) -> list[OutboxItem]: ...
    def messages(self, peer: str | None = None) -> list[Message]: ...
    def reads(self) -> list[ReadReceipt]: ...
    def applied(self) -> list[tuple[int, str]]: ...
    def close(self) -> None: ...


def recall_of(entry: Entry) -> Recall:
    # A recall takes effect at its entry's time: the server writes both in one transaction.
    data = entry.data
    return Recall(int(data["message_id"]), str(data["from"]), str(data["to"]), entry.created_at)


def read_of(entry: Entry) -> ReadReceipt:
    data = entry.data
    return ReadReceipt(str(data["reader"]), str(data["peer"]), int(data["up_to_message_id"]))


class MemoryStore:
    """A store that lives as long as the process: for tests, bots and short scripts."""

    def __init__(self) -> None:
        self._session: Session | None = None
        self._cursor = 0
        self._cursor_id: str | None = None
        self._acked = 0
        self._gaps = 0
        self._messages: dict[int, Message] = {}
        self._reads: dict[tuple[str, str], ReadReceipt] = {}
        self._applied: list[tuple[int, str]] = []
        self._outbox: dict[str, OutboxItem] = {}

    def session(self) -> Session | None:
        return self._session

    def set_session(self, session: Session | None) -> None:
        self._session = session

    def cursor(self) -> int:
        return self._cursor

    def cursor_id(self) -> str | None:
        return self._cursor_id

    def acked(self) -> int:
        return self._acked

    def set_acked(self, version: int) -> None:
        self._acked = max(self._acked, version)

    def gaps(self) -> int:
        return self._gaps

    def apply_page(self, page: Page) -> Applied:
        applied = Applied()
        before = self._cursor
        for entry in page.entries:
            # Each version once, even if a server (or a retry) repeats one.
            if entry.version <= self._cursor:
                continue
            self._applied.append((entry.version, entry.kind))
            applied.count += 1
            if entry.kind == "message":
                message = Message.from_json(entry.data)
                self._messages[message.id] = message
                applied.messages.append(message)
            elif entry.kind == "recall":
                recall = recall_of(entry)
                old = self._messages.get(recall.message_id)
                if old is not None:
                    self._messages[old.id] = replace(old, body="", recalled_at=recall.recalled_at)
                applied.recalls.append(recall)
            elif entry.kind == "read":
                receipt = read_of(entry)
                key = (receipt.reader, receipt.peer)
                current = self._reads.get(key)
                if current is None or current.up_to_message_id < receipt.up_to_message_id:
                    self._reads[key] = receipt
                applied.reads.append(receipt)
            self._cursor = entry.version
        if page.next_since > before:
            self._cursor_id = page.cursor_id
        self._cursor = max(self._cursor, page.next_since)
        if page.history_fallback:
            self._gaps += 1
        return applied

    def reset_stream(self) -> None:
        self._messages.clear()
        self._reads.clear()
        self._applied.clear()
        self._cursor = 0
        self._cursor_id = None
        self._acked = 0

    def clear(self) -> None:
        self.reset_stream()
        self._outbox.clear()
        self._session = None
        self._gaps = 0

    def add_outbox(self, item: OutboxItem) -> None:
        self._outbox[item.client_msg_id] = item

    def update_outbox(self, item: OutboxItem) -> None:
        self._outbox[item.client_msg_id] = item

    def outbox(self) -> list[OutboxItem]:
        return list(self._outbox.values())

    def messages(self, peer: str | None = None) -> list[Message]:
        user = self._session.user_id if self._session else ""
        return [
            m for _, m in sorted(self._messages.items()) if peer is None or m.peer_of(user) == peer
        ]

    def reads(self) -> list[ReadReceipt]:
        return [r for _, r in sorted(self._reads.items())]

    def applied(self) -> list[tuple[int, str]]:
        return list(self._applied)

    def close(self) -> None:
        pass


def pending(items: list[OutboxItem]) -> list[OutboxItem]:
    return [i for i in items if i.state is OutboxState.PENDING]
