"""Both stores apply group entries the same way: membership, messages, reads, news, gaps."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from msgsync_client import MemoryStore, Page, Session, SqliteStore, Store
from msgsync_client.changes import plan_refresh
from msgsync_client.models import Entry, EventsPage, Group, GroupEvent, GroupMember

ME = "alice"
GROUP = "g1"
T = "2026-12-05T10:00:00Z"


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    made.set_session(Session("http://s", ME, "d1", "token"))
    yield made
    made.close()


def event(seq: int, kind: str, actor: str = ME, **data: Any) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "created_at": T, "actor": actor, "data": data}


def message_event(message_id: int, seq: int, sender: str = "bob") -> dict[str, Any]:
    data = message_data(message_id, seq, sender)
    return {"seq": seq, "kind": "message", "created_at": T, "actor": sender, "data": data}


def group_entry(version: int, ev: dict[str, Any], group_id: str = GROUP) -> Entry:
    return Entry(version, "group", T, {"group_id": group_id, "event": ev})


def message_data(
    message_id: int, seq: int, sender: str = "bob", body: str = "hi"
) -> dict[str, Any]:
    return {
        "id": message_id,
        "from": sender,
        "to": None,
        "body": body,
        "client_msg_id": None,
        "created_at": T,
        "recalled_at": None,
        "group_id": GROUP,
        "seq": seq,
    }


def group_message(version: int, message_id: int, seq: int, sender: str = "bob") -> Entry:
    return Entry(version, "message", T, message_data(message_id, seq, sender))


def page(*entries: Entry) -> Page:
    last = entries[-1].version
    return Page(list(entries), last, last, False, False)


def log(*events: dict[str, Any], has_more: bool = False) -> EventsPage:
    parsed = [GroupEvent.from_json(GROUP, e) for e in events]
    last = parsed[-1].seq if parsed else 0
    return EventsPage(parsed, last, last, has_more)


def test_a_group_lives_through_its_events(store: Store) -> None:
    applied = store.apply_page(
        page(
            group_entry(1, event(1, "created", title="Trip", members=[ME])),
            group_entry(2, event(2, "member_added", user_id="bob")),
            group_message(3, 100, 3),
            group_entry(4, event(4, "title_changed", "bob", title="Trip 2027")),
            group_entry(5, event(5, "role_changed", user_id="bob", role="admin")),
            Entry(6, "read", T, {"reader": ME, "group_id": GROUP, "up_to_seq": 3}),
        )
    )
    state = store.group(GROUP)
    assert state is not None
    assert (state.title, state.owner, state.role) == ("Trip 2027", ME, "owner")
    assert state.members == {ME: "owner", "bob": "admin"}
    assert (state.seq, state.read_seq, state.pending_news) == (5, 3, False)
    assert [m.id for m in store.messages(group_id=GROUP)] == [100]
    assert store.messages(peer="bob") == []  # a group message is not the direct chat's
    assert [e.kind for e in applied.group_events] == [
        "created",
        "member_added",
        "title_changed",
        "role_changed",
    ]
    assert applied.count == 6
    # The `created` event named everything (title, members): nothing to fetch.
    assert store.groups_to_sync() == []


def test_a_gap_in_a_groups_events_is_filled_from_its_log_once(store: Store) -> None:
    store.apply_page(page(group_entry(1, event(1, "created", title="T")), group_message(2, 10, 2)))
    # seq 3 and 4 never reached the stream (pruned): 5 waits for the log, where it is
    # applied in its turn (applying it now would apply it twice, or out of order).
    early = store.apply_page(page(group_message(3, 50, 5)))
    assert (early.count, early.messages) == (1, [])
    state = store.group(GROUP)
    assert state is not None
    assert (state.seq, state.news_seq, state.pending_news) == (2, 5, True)
    assert [m.id for m in store.messages(group_id=GROUP)] == [10]

    applied = store.apply_events(
        GROUP,
        log(
            event(3, "member_added", user_id="carol"),
            message_event(40, 4, "carol"),
            message_event(50, 5),
        ),
    )
    state = store.group(GROUP)
    assert state is not None
    assert (state.seq, state.pending_news) == (5, False)
    assert state.members == {ME: "owner", "carol": "member"}
    assert [m.id for m in store.messages(group_id=GROUP)] == [10, 40, 50]
    assert [m.id for m in applied.messages] == [40, 50]
    # The stream repeating an event the log already applied changes nothing.
    again = store.apply_page(page(group_entry(4, event(3, "member_removed", user_id="carol"))))
    assert again.group_events == []
    assert store.group(GROUP) == state


def test_group_news_of_an_unknown_group_waits_for_its_log(store: Store) -> None:
    store.apply_page(page(Entry(1, "group_news", T, {"group_id": GROUP, "seq": 7})))
    state = store.group(GROUP)
    assert state is not None
    assert (state.seq, state.news_seq, state.stale) == (0, 7, True)
    # A log page with more to come keeps the news pending; the last one covers it.
    store.apply_events(GROUP, log(event(5, "member_added", user_id=ME), has_more=True))
    state = store.group(GROUP)
    assert state is not None
    assert (state.seq, state.pending_news) == (5, True)
    store.apply_events(GROUP, log(event(6, "title_changed", title="Later"), event(7, "x_new")))
    state = store.group(GROUP)
    assert state is not None
    assert (state.seq, state.pending_news, state.title, state.role) == (7, False, "Later", "member")


def test_a_removed_member_drops_the_group_and_a_new_membership_starts_over(store: Store) -> None:
    store.apply_page(
        page(
            group_entry(1, event(3, "member_added", "bob", user_id=ME)),
            group_message(2, 10, 4),
            group_entry(3, event(5, "member_removed", "bob", user_id=ME)),
        )
    )
    assert (store.group(GROUP), store.messages(group_id=GROUP)) == (None, [])
    # A departure of ours from a group not known here leaves nothing behind.
    store.apply_page(page(group_entry(4, event(6, "member_left", user_id=ME), "g-other")))
    assert store.groups() == []
    store.apply_page(
        page(group_entry(5, event(9, "member_added", "bob", user_id=ME)), group_message(6, 20, 10))
    )
    state = store.group(GROUP)
    assert state is not None
    assert (state.seq, state.pending_news, state.role) == (10, False, "member")
    assert [m.id for m in store.messages(group_id=GROUP)] == [20]


def test_a_group_message_recalled(store: Store) -> None:
    store.apply_page(page(group_entry(1, event(1, "created", title="T")), group_message(2, 10, 2)))
    recall = {"message_id": 10, "from": "bob", "to": None, "group_id": GROUP}
    applied = store.apply_page(page(Entry(3, "recall", "2026-12-05T10:05:00Z", recall)))
    (message,) = store.messages(group_id=GROUP)
    assert (message.body, message.recalled_at) == ("", "2026-12-05T10:05:00Z")
    assert applied.recalls[0].group_id == GROUP


def test_a_refresh_stores_the_servers_view(store: Store) -> None:
    store.apply_page(page(group_entry(1, event(4, "member_added", "bob", user_id=ME))))
    # Added to a group: its title and members come from the server.
    assert [g.group_id for g in store.groups_to_sync()] == [GROUP]
    group = Group(GROUP, "From the server", "bob", 3, 4, 4, 2, False, T)
    members = [GroupMember("bob", "owner"), GroupMember(ME, "member"), GroupMember("c", "admin")]
    store.commit(plan_refresh(store.group(GROUP), ME, group, members))
    state = store.group(GROUP)
    assert state is not None
    assert (state.title, state.owner, state.role, state.stale, state.seq) == (
        "From the server",
        "bob",
        "member",
        False,
        4,
    )
    assert state.members == {"bob": "owner", ME: "member", "c": "admin"}
    assert store.groups_to_sync() == []


def test_reset_and_clear_forget_groups(store: Store) -> None:
    store.apply_page(page(group_entry(1, event(1, "created", title="T")), group_message(2, 10, 2)))
    store.reset_stream()
    assert (store.groups(), store.messages()) == ([], [])
    store.apply_page(page(group_entry(1, event(1, "created", title="T"))))
    store.clear()
    assert store.groups() == []


def test_sqlite_keeps_groups_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = SqliteStore(path)
    first.set_session(Session("http://s", ME, "d1", "token"))
    first.apply_page(page(group_entry(1, event(1, "created", title="T")), group_message(2, 9, 2)))
    first.close()
    again = SqliteStore(path)
    assert again.groups() == [
        again.group(GROUP),
    ]
    state = again.group(GROUP)
    assert state is not None
    assert (state.title, state.seq, state.members) == ("T", 2, {ME: "owner"})
    (message,) = again.messages(group_id=GROUP)
    assert (message.recipient, message.group_id, message.seq) == (None, GROUP, 2)
    again.close()


def test_sqlite_upgrades_a_file_written_before_groups(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE messages (
                id INTEGER PRIMARY KEY, sender TEXT NOT NULL, recipient TEXT NOT NULL,
                peer TEXT NOT NULL, body TEXT NOT NULL, client_msg_id TEXT,
                created_at TEXT NOT NULL, recalled_at TEXT
            );
            CREATE INDEX messages_peer ON messages (peer, id);
            CREATE TABLE outbox (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, client_msg_id TEXT NOT NULL UNIQUE,
                recipient TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL,
                message_id INTEGER, error TEXT
            );
            INSERT INTO state VALUES ('cursor', '1'), ('user_id', 'alice');
            INSERT INTO messages VALUES (1, 'bob', 'alice', 'bob', 'old one', NULL, 't', NULL);
            INSERT INTO outbox (client_msg_id, recipient, body, state)
                VALUES ('c1', 'bob', 'queued', 'pending');
            """
        )
    store = SqliteStore(path)
    assert store.cursor() == 1
    assert [(m.body, m.group_id) for m in store.messages(peer="bob")] == [("old one", None)]
    assert [(i.client_msg_id, i.group_id) for i in store.outbox()] == [("c1", None)]
    store.apply_page(page(group_entry(2, event(1, "created", title="T")), group_message(3, 5, 2)))
    assert [m.id for m in store.messages(group_id=GROUP)] == [5]
    store.close()


def test_news_of_several_groups_at_one_version_is_all_applied(store: Store) -> None:
    # Below the floor the server names every group of the user at the floor's version.
    news = [Entry(9, "group_news", T, {"group_id": g, "seq": 3}) for g in ("g1", "g2", "g3")]
    store.apply_page(Page(news, 9, 9, False, True))
    assert [(g.group_id, g.news_seq) for g in store.groups_to_sync()] == [
        ("g1", 3),
        ("g2", 3),
        ("g3", 3),
    ]
    assert store.cursor() == 9


def news(version: int, seq: int, group_id: str = GROUP) -> Entry:
    return Entry(version, "group_news", T, {"group_id": group_id, "seq": seq})


def seqs(applied: list[Any]) -> list[int]:
    return [m.seq for m in applied]


def test_a_log_read_goes_on_until_has_more_is_false_whatever_the_news_said(
    store: Store,
) -> None:
    store.apply_page(page(group_entry(1, event(1, "created", title="T"))))
    # The news names seq 2, but the log has grown since: its first page reaches past 2 and
    # says there is more. Only a read that reaches the end covers the news on the server
    # (no other news comes until then), so the read stays due.
    store.apply_page(page(news(2, 2)))
    store.apply_events(GROUP, log(message_event(10, 2), message_event(11, 3), has_more=True))
    state = store.group(GROUP)
    assert state is not None
    assert (state.seq, state.pending_news) == (3, True)
    assert [g.group_id for g in store.groups_to_sync()] == [GROUP]
    store.apply_events(GROUP, log(message_event(12, 4)))
    state = store.group(GROUP)
    assert state is not None
    assert (state.seq, state.pending_news) == (4, False)
    assert [m.id for m in store.messages(group_id=GROUP)] == [10, 11, 12]


def test_every_group_news_makes_a_read_due_even_one_behind_the_position(store: Store) -> None:
    store.apply_page(
        page(group_entry(1, event(1, "created", title="T", members=[ME])), group_message(2, 10, 2))
    )
    # Around a mode switch the stream may bring an event and news of it: the news still
    # asks for a read, which the server counts as covering it.
    store.apply_page(page(news(3, 2)))
    assert [g.group_id for g in store.groups_to_sync()] == [GROUP]
    store.apply_events(GROUP, EventsPage([], 2, 2, False))
    state = store.group(GROUP)
    assert state is not None
    assert (state.seq, state.pending_news) == (2, False)
    assert store.groups_to_sync() == []


def test_an_event_from_the_log_and_from_the_stream_is_applied_once_in_either_order(
    store: Store,
) -> None:
    seen: list[int] = []
    created = store.apply_page(page(group_entry(1, event(1, "created", title="T"))))
    assert created.group_events[0].seq == 1
    # The stream first, in order (a small group)...
    seen += seqs(store.apply_page(page(group_message(2, 10, 2), group_message(3, 11, 3))).messages)
    # ...then the group turns large: news, and a log that starts before our position.
    store.apply_page(page(news(4, 5)))
    seen += seqs(
        store.apply_events(
            GROUP,
            log(message_event(10, 2), message_event(11, 3), message_event(12, 4), has_more=True),
        ).messages
    )
    # Back to small before the read ended: the next event comes in the stream too, past
    # the position while a read is due; the log then brings it as well.
    seen += seqs(store.apply_page(page(group_message(5, 14, 6))).messages)
    seen += seqs(
        store.apply_events(GROUP, log(message_event(13, 5), message_event(14, 6))).messages
    )
    # The stream repeats what the log applied, then goes on in order.
    seen += seqs(store.apply_page(page(group_message(6, 14, 6), group_message(7, 15, 7))).messages)
    assert seen == [2, 3, 4, 5, 6, 7]
    assert [m.seq for m in store.messages(group_id=GROUP)] == [2, 3, 4, 5, 6, 7]
    state = store.group(GROUP)
    assert state is not None
    assert (state.seq, state.pending_news) == (7, False)


def test_membership_events_from_both_sides_are_applied_once(store: Store) -> None:
    store.apply_page(page(group_entry(1, event(1, "created", title="T"))))
    store.apply_page(page(news(2, 3)))
    # The stream brings carol's arrival (the member concerned's entry, or a switch back to
    # write fan-out) while the read is due: it waits for the log.
    early = store.apply_page(page(group_entry(3, event(3, "member_added", user_id="carol"))))
    assert early.group_events == []
    events = store.apply_events(
        GROUP,
        log(
            event(2, "member_added", user_id="bob"),
            event(3, "member_added", user_id="carol"),
        ),
    ).group_events
    assert [e.seq for e in events] == [2, 3]
    late = store.apply_page(page(group_entry(4, event(3, "member_added", user_id="carol"))))
    assert late.group_events == []
    state = store.group(GROUP)
    assert state is not None
    assert state.members == {ME: "owner", "bob": "member", "carol": "member"}


def test_sqlite_resumes_a_log_read_cut_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = SqliteStore(path)
    first.set_session(Session("http://s", ME, "d1", "token"))
    first.apply_page(page(group_entry(1, event(1, "created", title="T", members=[ME])), news(2, 4)))
    first.apply_events(GROUP, log(message_event(10, 2), has_more=True))
    first.close()  # the process dies before the next page of the log
    again = SqliteStore(path)
    (state,) = again.groups_to_sync()
    assert (state.seq, state.pending_news) == (2, True)
    applied = again.apply_events(GROUP, log(message_event(11, 3), message_event(12, 4)))
    assert [m.id for m in applied.messages] == [11, 12]
    assert [m.id for m in again.messages(group_id=GROUP)] == [10, 11, 12]
    assert again.groups_to_sync() == []
    again.close()
