"""The local store: what the device knows, and the cursor that says up to where.

A store applies a page's entries and the page's cursor in one local transaction, so that a
crash leaves either both or neither: restarting from the stored cursor then neither skips
nor re-applies an entry (see docs/client-algorithm.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from msgsync_client.changes import Applied, Change, plan_events, plan_page
from msgsync_client.models import (
    EventsPage,
    GroupState,
    Message,
    OutboxItem,
    OutboxState,
    Page,
    ReadReceipt,
    Session,
)

__all__ = ["Applied", "MemoryStore", "Store"]


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
        `page.next_since` as the cursor with the id of the entry there (`since_id`; and
        count a gap for a history_fallback page), all
        in one local transaction (see changes.plan_page)."""
        ...

    def apply_events(self, group_id: str, page: EventsPage) -> Applied:
        """Apply a page of the group's log read from its `seq`, and its new position, in one
        local transaction (see changes.plan_events)."""
        ...

    def commit(self, change: Change) -> None:
        """Write a change in one local transaction (in the order Change documents)."""
        ...

    def reset_stream(self) -> None:
        """since_ahead / history_rewritten recovery: forget the stream (messages, receipts,
        groups, the applied log) and set the cursor to 0 (with no entry id), in one
        transaction; the outbox and the session stay."""
        ...

    def clear(self) -> None:
        """Logout, or a login by another account: forget everything the store holds (the
        session and its token, the stream, the cursor, the read receipts, the groups, the
        outbox, the counters) in one transaction. A crash leaves the old store or an empty
        one, never a cursor without its stream or an outbox without its user."""
        ...

    def add_outbox(self, item: OutboxItem) -> None: ...
    def update_outbox(self, item: OutboxItem) -> None: ...
    def outbox(self) -> list[OutboxItem]: ...
    def messages(self, peer: str | None = None, group_id: str | None = None) -> list[Message]:
        """Messages by id: all of them, a direct conversation's (`peer`) or a group's."""
        ...

    def reads(self) -> list[ReadReceipt]: ...
    def group(self, group_id: str) -> GroupState | None: ...
    def groups(self) -> list[GroupState]:
        """The user's groups known here, by group id."""
        ...

    def groups_to_sync(self) -> list[GroupState]:
        """The groups with news to read from their log, or details to fetch (stale)."""
        ...

    def applied(self) -> list[tuple[int, str]]: ...
    def close(self) -> None: ...


def user_of(store: Store) -> str:
    session = store.session()
    return session.user_id if session else ""


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
        self._groups: dict[str, GroupState] = {}
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
        change, applied = plan_page(self, user_of(self), page)
        self.commit(change)
        return applied

    def apply_events(self, group_id: str, page: EventsPage) -> Applied:
        change, applied = plan_events(self, user_of(self), group_id, page)
        self.commit(change)
        return applied

    def commit(self, change: Change) -> None:
        for group_id in change.dropped_groups:
            self._groups.pop(group_id, None)
            for message_id in [i for i, m in self._messages.items() if m.group_id == group_id]:
                del self._messages[message_id]
        self._messages.update(change.messages)
        for recall in change.recalls:
            old = self._messages.get(recall.message_id)
            if old is not None:
                self._messages[old.id] = replace(old, body="", recalled_at=recall.recalled_at)
        for key, receipt in change.reads.items():
            current = self._reads.get(key)
            if current is None or current.up_to_message_id < receipt.up_to_message_id:
                self._reads[key] = receipt
        self._groups.update(change.groups)
        self._applied.extend(change.applied)
        if change.cursor is not None:
            self._cursor = change.cursor
            self._cursor_id = change.cursor_id
        if change.gap:
            self._gaps += 1

    def reset_stream(self) -> None:
        self._messages.clear()
        self._reads.clear()
        self._groups.clear()
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

    def messages(self, peer: str | None = None, group_id: str | None = None) -> list[Message]:
        user = user_of(self)
        return [
            m
            for _, m in sorted(self._messages.items())
            if (peer is None or m.peer_of(user) == peer)
            and (group_id is None or m.group_id == group_id)
        ]

    def reads(self) -> list[ReadReceipt]:
        return [r for _, r in sorted(self._reads.items())]

    def group(self, group_id: str) -> GroupState | None:
        return self._groups.get(group_id)

    def groups(self) -> list[GroupState]:
        return [g for _, g in sorted(self._groups.items())]

    def groups_to_sync(self) -> list[GroupState]:
        return [g for g in self.groups() if g.pending_news or g.stale]

    def applied(self) -> list[tuple[int, str]]:
        return list(self._applied)

    def close(self) -> None:
        pass


def pending(items: list[OutboxItem]) -> list[OutboxItem]:
    return [i for i in items if i.state is OutboxState.PENDING]
