"""The inbox part of the store, on both databases: sends, pages, version bumps, ack cursors."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import pytest

from app.errors import AppError
from app.inbox.operations import mark_read, recall_message
from app.store import Store
from app.store.inbox import Outgoing, Page
from tests.store.conftest import add_device, add_users, lock_waiters


def versions(page: Page) -> list[int]:
    return [entry.version for entry in page.entries]


async def read_all(store: Store, user_id: str) -> Page:
    return await store.inbox.read_page(user_id, 0, 10_000)


async def test_a_send_gives_each_party_its_next_version(store: Store) -> None:
    alice, bob = await add_users(store, 2)
    first = await store.inbox.send(Outgoing(alice, bob, "hello", "c1"))
    second = await store.inbox.send(Outgoing(bob, alice, "hi", None))
    note = await store.inbox.send(Outgoing(alice, alice, "note to self", None))
    assert first is not None
    assert second is not None
    assert note is not None
    assert (first.version, second.version, note.version) == (1, 2, 3)
    assert first.created
    assert first.message["body"] == "hello"
    assert first.message["from"] == alice
    assert first.message["client_msg_id"] == "c1"
    # A note to oneself is one entry, at one version.
    assert versions(await read_all(store, alice)) == [1, 2, 3]
    page = await read_all(store, bob)
    assert versions(page) == [1, 2]
    assert page.latest_version == 2
    assert not page.has_more
    # Each entry carries the message as its send answered it, the id spliced in.
    assert orjson.loads(page.entries[0].data) == first.message
    assert orjson.loads(page.entries[1].data) == second.message


async def test_a_repeated_client_msg_id_answers_the_first_send(store: Store) -> None:
    alice, bob = await add_users(store, 2)
    first = await store.inbox.send(Outgoing(alice, bob, "once", "same"))
    again = await store.inbox.send(Outgoing(alice, bob, "once", "same"))
    assert first is not None
    assert again is not None
    assert not again.created
    assert (again.message, again.version) == (first.message, first.version)
    assert await store.inbox.find_send(alice, "same") == again
    # The retry took no version from anyone.
    assert (await read_all(store, bob)).latest_version == 1
    assert (await read_all(store, alice)).latest_version == 1


async def test_a_send_to_nobody_costs_no_version(store: Store) -> None:
    (alice,) = await add_users(store, 1)
    assert await store.inbox.send(Outgoing(alice, "nobody-here", "lost", None)) is None
    assert (await read_all(store, alice)).latest_version == 0
    (bob,) = await add_users(store, 1)
    sent = await store.inbox.send(Outgoing(alice, bob, "found", None))
    assert sent is not None
    assert sent.version == 1


async def test_concurrent_crossing_sends_commit_gap_free_and_in_order(store: Store) -> None:
    """20 senders at once over crossing pairs (A<->B, A->C, C->A, B->C, ...): every user's
    versions are gap-free, no send deadlocks, and readers polling meanwhile never see a
    version committed before an earlier one (a page never skips an entry)."""
    users = await add_users(store, 4)
    pairs = list(itertools.permutations(users, 2))[:20]
    per_task = 5
    done = asyncio.Event()

    async def sender(a: str, b: str) -> None:
        for n in range(per_task):
            assert await store.inbox.send(Outgoing(a, b, f"{a}>{b} {n}", None)) is not None

    async def reader(user_id: str) -> list[int]:
        seen: list[int] = []
        since = 0
        while True:
            finished = done.is_set()
            page = await store.inbox.read_page(user_id, since, 7)
            # Each page continues exactly where the last ended: no entry skipped.
            assert versions(page) == list(range(since + 1, since + 1 + len(page.entries)))
            seen += versions(page)
            since = page.next_since
            if finished and not page.has_more:
                return seen
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader(u)) for u in users]
    await asyncio.wait_for(asyncio.gather(*(sender(a, b) for a, b in pairs)), timeout=120)
    done.set()
    seen = await asyncio.gather(*readers)
    for user_id, got in zip(users, seen, strict=True):
        involved = sum(per_task for a, b in pairs if user_id in (a, b))
        assert got == list(range(1, involved + 1))
        assert (await read_all(store, user_id)).latest_version == involved


async def test_a_page_is_bounded_and_since_ahead_is_refused(store: Store) -> None:
    alice, bob = await add_users(store, 2)
    for n in range(5):
        await store.inbox.send(Outgoing(alice, bob, str(n), None))
    page = await store.inbox.read_page(bob, 1, 2)
    assert versions(page) == [2, 3]
    assert (page.next_since, page.latest_version, page.has_more) == (3, 5, True)
    empty = await store.inbox.read_page(bob, 5, 2)
    assert versions(empty) == []
    assert empty.next_since == 5
    assert not empty.has_more
    with pytest.raises(AppError) as refused:
        await store.inbox.read_page(bob, 6, 2)
    assert refused.value.code == "since_ahead"


async def test_bumps_take_the_next_versions_of_existing_users(store: Store) -> None:
    alice, bob = await add_users(store, 2)
    await store.inbox.send(Outgoing(alice, bob, "x", None))
    async with store.db.session() as session, session.begin():
        bumped = await store.inbox.bump_versions(session, [bob, alice, "nobody-here", bob])
    assert bumped == {alice: 2, bob: 2}


async def test_a_recall_takes_a_version_of_each_party(store: Store) -> None:
    alice, bob = await add_users(store, 2)
    sent = await store.inbox.send(Outgoing(alice, bob, "oops", None))
    assert sent is not None
    recalled = await recall_message(store.db, alice, sent.message["id"], 3600)
    assert recalled.changed
    assert recalled.message["body"] == ""
    page = await read_all(store, bob)
    assert [e.kind for e in page.entries] == ["message", "recall"]
    assert orjson.loads(page.entries[0].data)["recalled_at"] is not None
    again = await recall_message(store.db, alice, sent.message["id"], 3600)
    assert not again.changed
    assert (await read_all(store, bob)).latest_version == 2


async def test_ack_cursors_keep_the_highest_valid_version(store: Store) -> None:
    alice, bob = await add_users(store, 2)
    phone, laptop = await add_device(store, bob), await add_device(store, bob)
    for n in range(3):
        await store.inbox.send(Outgoing(alice, bob, str(n), None))
    # A lower and a higher ack in one batch leave the higher; one ahead is not applied.
    found = await store.inbox.advance_cursors(
        [(phone, 1), (phone, 3), (phone, 2), (laptop, 9), ("no-such-device", 1)]
    )
    assert found == {phone: (3, 3), laptop: (0, 3)}
    # A cursor never moves back.
    assert await store.inbox.advance_cursors([(phone, 1)]) == {phone: (3, 3)}


async def test_a_pair_shares_one_conversation_each_party_with_its_own_read_cursor(
    store: Store,
) -> None:
    alice, bob = await add_users(store, 2)
    sent = [
        await store.inbox.send(Outgoing(sender, recipient, body, None))
        for sender, recipient, body in (
            (alice, bob, "one"),
            (bob, alice, "two"),
            (bob, alice, "three"),
            (alice, alice, "note"),
        )
    ]
    one, two, three, note = (s.message["id"] for s in sent if s is not None)

    async def listed(user: str, limit: int = 10, before: int | None = None) -> list[Any]:
        page = await store.inbox.conversations(user, limit, before)
        rows = [
            (c["peer"], c["last_message"]["id"], c["unread_count"]) for c in page["conversations"]
        ]
        return [*rows, page["next_before"]]

    # Notes to oneself are never unread; each side counts only the other's messages.
    assert await listed(alice) == [(alice, note, 0), (bob, three, 2), None]
    assert await listed(bob) == [(alice, three, 1), None]
    assert await listed(alice, 1) == [(alice, note, 0), note]
    assert await listed(alice, 1, note) == [(bob, three, 2), None]
    await mark_read(store.db, alice, bob, two)
    assert await listed(alice) == [(alice, note, 0), (bob, three, 1), None]
    assert await listed(bob) == [(alice, three, 1), None]  # alice's read is hers alone
    await mark_read(store.db, bob, alice, one)
    assert await listed(bob) == [(alice, three, 0), None]
    assert await listed(alice) == [(alice, note, 0), (bob, three, 1), None]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True, scope="module")
async def test_crossing_first_messages_of_a_pair_share_one_conversation(store: Store) -> None:
    """PostgreSQL: the first messages of A to B and of B to A, both waiting for the users'
    locks, so that each statement's snapshot predates the other's conversation row: both
    are stored, and both parties list the one conversation with the later message."""
    alice, bob = await add_users(store, 2)
    async with store.db.session() as session, session.begin():
        await store.inbox.bump_versions(session, (alice, bob))  # holds both users' locks
        sends = [
            asyncio.create_task(store.inbox.send(Outgoing(alice, bob, "hi bob", None))),
            asyncio.create_task(store.inbox.send(Outgoing(bob, alice, "hi alice", None))),
        ]
        while await lock_waiters(store) < 2:  # only the two sends wait in this database
            assert not any(t.done() for t in sends)
            await asyncio.sleep(0.01)
    sent = await asyncio.gather(*sends)
    assert all(s is not None for s in sent)
    last = max(s.message["id"] for s in sent if s is not None)
    for user, peer in ((alice, bob), (bob, alice)):
        (conversation,) = (await store.inbox.conversations(user, 10, None))["conversations"]
        assert (conversation["peer"], conversation["last_message"]["id"]) == (peer, last)
        assert conversation["unread_count"] == 1
