"""Both stores apply a page the same way; the SQLite one all or nothing, and privately."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from msgsync_client import MemoryStore, Page, Session, SqliteStore, Store
from msgsync_client.models import Entry, OutboxItem, OutboxState


def message(version: int, message_id: int, body: str = "hi", sender: str = "bob") -> Entry:
    data: dict[str, Any] = {
        "id": message_id,
        "from": sender,
        "to": "alice" if sender == "bob" else "bob",
        "body": body,
        "client_msg_id": None,
        "created_at": f"2026-11-27T10:00:{version:02d}Z",
        "recalled_at": None,
    }
    return Entry(version, "message", data["created_at"], data)


def page(*entries: Entry, next_since: int | None = None, fallback: bool = False) -> Page:
    last = next_since if next_since is not None else entries[-1].version
    return Page(list(entries), last, last, False, fallback)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    yield made
    made.close()


def test_a_page_moves_the_cursor_and_applies_each_version_once(store: Store) -> None:
    store.apply_page(page(message(1, 10), message(2, 11)))
    # A repeated version (a retried page) is not applied again.
    applied = store.apply_page(page(message(2, 11), message(3, 12)))
    assert applied.count == 1
    assert store.cursor() == 3
    assert store.applied() == [(1, "message"), (2, "message"), (3, "message")]
    assert [m.id for m in store.messages()] == [10, 11, 12]


def test_recall_and_read_receipts_apply(store: Store) -> None:
    store.apply_page(page(message(1, 10), message(2, 11)))
    recall = Entry(
        3, "recall", "2026-11-27T10:01:00Z", {"message_id": 10, "from": "bob", "to": "alice"}
    )
    read_late = Entry(4, "read", "t", {"reader": "bob", "peer": "alice", "up_to_message_id": 11})
    read_early = Entry(5, "read", "t", {"reader": "bob", "peer": "alice", "up_to_message_id": 10})
    store.apply_page(page(recall, read_late, read_early))
    first = store.messages()[0]
    assert (first.body, first.recalled_at) == ("", "2026-11-27T10:01:00Z")
    # A receipt never moves back.
    assert [(r.reader, r.up_to_message_id) for r in store.reads()] == [("bob", 11)]


def test_an_empty_page_past_the_floor_moves_the_cursor_and_counts_a_gap(store: Store) -> None:
    store.apply_page(Page([], 40, 45, True, True))
    assert store.cursor() == 40
    assert store.gaps() == 1


def test_reset_forgets_the_stream_but_keeps_the_outbox(store: Store) -> None:
    store.add_outbox(OutboxItem("c1", "bob", "queued", OutboxState.PENDING))
    store.apply_page(page(message(1, 10)))
    store.reset_stream()
    assert (store.cursor(), store.messages(), store.applied()) == (0, [], [])
    assert [i.client_msg_id for i in store.outbox()] == ["c1"]


class _FailingStore(SqliteStore):
    def _before_cursor(self, page: Page) -> None:
        raise RuntimeError("crash between the entries and the cursor")


def test_sqlite_applies_a_page_and_its_cursor_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    failing = _FailingStore(path)
    with pytest.raises(RuntimeError):
        failing.apply_page(page(message(1, 10)))
    failing.close()
    reopened = SqliteStore(path)
    assert (reopened.cursor(), reopened.messages(), reopened.applied()) == (0, [], [])
    reopened.close()


def test_sqlite_store_is_private_to_the_user(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    store.apply_page(page(message(1, 10)))
    for name in (path, Path(f"{path}-wal")):
        if name.exists():
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
    store.close()


def test_clear_forgets_everything_the_store_holds(store: Store) -> None:
    store.set_session(Session("http://s", "alice", "d1", "token"))
    store.add_outbox(OutboxItem("c1", "bob", "queued", OutboxState.PENDING))
    store.apply_page(page(message(1, 10), next_since=4, fallback=True))
    read = Entry(5, "read", "t", {"reader": "bob", "peer": "alice", "up_to_message_id": 10})
    store.apply_page(page(read))
    store.set_acked(5)
    store.clear()
    assert store.session() is None
    assert (store.cursor(), store.acked(), store.gaps()) == (0, 0, 0)
    assert (store.messages(), store.reads(), store.applied(), store.outbox()) == ([], [], [], [])


def test_sqlite_clear_is_durable_and_leaves_no_text_in_the_files(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    store.set_session(Session("http://s", "alice", "d1", "alices-secret-token"))
    store.add_outbox(OutboxItem("c1", "bob", "alices-queued-words", OutboxState.PENDING))
    store.apply_page(page(message(1, 10, body="alices-private-words")))
    store.set_acked(1)
    store.clear()
    # A shared computer: the deleted rows are overwritten, not left in free pages or in
    # the write-ahead log for the next user of the account to read from the files, at
    # once (an app may keep the store open long after a logout) and after closing.
    _assert_not_in_files(tmp_path)
    store.close()
    _assert_not_in_files(tmp_path)
    reopened = SqliteStore(path)
    assert reopened.session() is None
    assert (reopened.cursor(), reopened.acked(), reopened.messages(), reopened.outbox()) == (
        0,
        0,
        [],
        [],
    )
    reopened.close()


def _assert_not_in_files(directory: Path) -> None:
    files = [p for p in directory.iterdir() if p.name.startswith("s.db")]
    for secret in (b"alices-private-words", b"alices-queued-words", b"alices-secret-token"):
        assert not any(secret in p.read_bytes() for p in files), secret
