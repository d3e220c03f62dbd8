"""Large groups in the store, on both databases: group_news is coalesced, and a read that
covers a member's news never leaves an event unsignalled, whatever commits between the read
and its cover (DESIGN.md "Groups")."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import select, update

from app.config import Settings
from app.db.models import Pusher
from app.groups import members, messages, render
from app.store import Store
from app.store.groups import MemberRow
from tests.conftest import make_settings
from tests.store.conftest import add_device, add_pusher, add_users, lock_waiters

LIMIT = 3  # a small fan-out limit: a group of 5 is large


@pytest.fixture
def settings(store: Store) -> Settings:
    return make_settings(store.db.settings.database_url, group_fanout_limit=LIMIT)


async def _entries(store: Store, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    page = await store.inbox.read_page(user_id, 0, 10_000)
    return [(e.kind, orjson.loads(e.data)) for e in page.entries]


async def _news(store: Store, user_id: str, group_id: str) -> list[int]:
    """The seqs of the user's group_news entries of this group, in stream order."""
    return [
        data["seq"]
        for kind, data in await _entries(store, user_id)
        if kind == "group_news" and data["group_id"] == group_id
    ]


async def _large_group(store: Store, settings: Settings, size: int = 5) -> tuple[str, list[str]]:
    users = await add_users(store, size, "lg")
    created = await members.create_group(store.groups, settings, users[0], "Large", users[1:], None)
    group = created.body["group"]
    assert group["large"]
    return group["group_id"], users


async def _send(store: Store, group_id: str, sender: str, body: str) -> Any:
    sent = await store.groups.send(group_id, sender, body, None, None)
    assert sent is not None
    return sent


async def _news_seq(store: Store, group_id: str, user_id: str) -> int | None:
    found = await store.groups.view(group_id, user_id)
    assert found is not None
    return found[1].news_seq


async def test_news_is_coalesced_until_a_read_covers_it(store: Store, settings: Settings) -> None:
    group_id, (owner, reader, idle, *_) = await _large_group(store, settings)
    first = await _send(store, group_id, owner, "one")
    # Logged once; every member (the sender too) gets one group_news entry and no message.
    assert first.message["seq"] == 2
    assert sorted(first.members) == sorted(await _members(store, group_id))
    for _ in range(4):
        again = await _send(store, group_id, owner, "more")
        assert again.members == []  # everyone holds news: a send writes no entry at all
    for user in (owner, reader, idle):
        assert await _news(store, user, group_id) == [2]
        kinds = [kind for kind, _ in await _entries(store, user)]
        assert kinds == ["group", "group_news"]  # `created`, then the one news entry
    # The sender's version for its message is its group_news entry's, then its latest.
    assert first.version == (await store.inbox.read_page(owner, 0, 100)).latest_version

    # A read of the log to its end covers the reader's news: the next send signals it anew.
    page = await messages.events(store.groups, group_id, reader, None, 100)
    assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4, 5, 6]
    assert not page["has_more"]
    assert await _news_seq(store, group_id, reader) is None
    assert await _news_seq(store, group_id, idle) == 2
    latest = await _send(store, group_id, owner, "after the read")
    assert latest.members == [reader]
    assert await _news(store, reader, group_id) == [2, 7]
    assert await _news(store, idle, group_id) == [2]  # idle: still one entry for 6 events


async def _members(store: Store, group_id: str) -> list[str]:
    return [m.user_id for m in await store.groups.members(group_id, None, 1000)]


async def test_a_read_that_stops_short_covers_nothing(store: Store, settings: Settings) -> None:
    group_id, (owner, reader, *_) = await _large_group(store, settings)
    for i in range(3):
        await _send(store, group_id, owner, f"m{i}")
    page = await messages.events(store.groups, group_id, reader, None, 2)
    assert page["has_more"]
    assert await _news_seq(store, group_id, reader) == 2
    rest = await messages.events(store.groups, group_id, reader, page["next_after_seq"], 2)
    assert [e["seq"] for e in rest["events"]] == [3, 4]
    assert not rest["has_more"]
    assert await _news_seq(store, group_id, reader) is None


async def test_a_send_between_the_read_and_its_cover_keeps_the_news(
    store: Store, settings: Settings
) -> None:
    """The reader read the log to seq L; an event commits (L + 1) before the reader covers
    through L: the cover clears nothing and names L + 1, so the reader holds its news (it
    reads on), and the send wrote it none (it held news)."""
    group_id, (owner, reader, *_) = await _large_group(store, settings)
    await _send(store, group_id, owner, "first")
    found = await store.groups.view(group_id, reader)
    assert found is not None
    read = await store.groups.events(group_id, 0, 100)
    through = read[-1].seq
    assert through == found[0].latest_seq == 2
    racing = await _send(store, group_id, owner, "between")
    assert reader not in racing.members
    assert await store.groups.cover(group_id, reader, through) == 3
    assert await _news_seq(store, group_id, reader) == 2  # still held: nothing unsignalled
    # Reading on to the new latest covers it; the next event signals the reader again.
    assert await store.groups.cover(group_id, reader, 3) == 3
    assert await _news_seq(store, group_id, reader) is None
    assert reader in (await _send(store, group_id, owner, "next")).members


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True, scope="module")
async def test_a_cover_waits_for_an_event_in_flight(store: Store, settings: Settings) -> None:
    """PostgreSQL: an event holds the group's row while it writes; a cover through the
    latest seq the reader saw waits for it, then finds the new latest and clears nothing.
    (SQLite runs writers one at a time: the interleaving cannot happen there.)"""
    group_id, (owner, reader, *_) = await _large_group(store, settings)
    await _send(store, group_id, owner, "first")
    await messages.events(store.groups, group_id, reader, None, 100)  # covered
    await _send(store, group_id, owner, "second")  # a new news entry: seq 3
    assert await _news(store, reader, group_id) == [2, 3]
    through = 3  # the reader has read the log to 3
    async with store.groups.work() as work:
        row = await work.lock(group_id)
        assert row is not None
        await work.lock_users([], news=True)
        appended = await work.append_event("title_changed", owner, {"title": "x"}, [], news=True)
        assert appended.seq == 4
        assert reader not in appended.noticed  # it holds news (seq 3)
        cover = asyncio.create_task(store.groups.cover(group_id, reader, through))
        await _until_waiting_on_a_lock(store, cover)
        assert not cover.done()  # it waits for the event to commit
    assert await cover == 4
    assert await _news_seq(store, group_id, reader) == 3


async def test_a_batch_of_covers_decides_each_reader_as_alone(
    store: Store, settings: Settings
) -> None:
    """Covers of one group in one transaction: the one latest seq read under the lock, the
    news cleared of exactly the readers whose read reached it."""
    group_id, (owner, reached, behind, idle, *_) = await _large_group(store, settings)
    await _send(store, group_id, owner, "first")  # everyone holds news at seq 2
    assert await store.groups.cover_batch(group_id, [(reached, 2), (behind, 1)]) == 2
    assert await _news_seq(store, group_id, reached) is None
    assert await _news_seq(store, group_id, behind) == 2  # it reads on
    assert await _news_seq(store, group_id, idle) == 2
    assert await store.groups.cover_batch("no-such-group", [(reached, 2)]) is None
    # Readers covering at once, as the members a send woke do: each answered the latest.
    await _send(store, group_id, owner, "second")  # a new news entry for `reached` only
    readers = [(reached, 3), (behind, 3), (idle, 2)]
    latest = await asyncio.gather(*(store.groups.cover(group_id, u, t) for u, t in readers))
    assert latest == [3, 3, 3]
    assert await _news_seq(store, group_id, reached) is None
    assert await _news_seq(store, group_id, behind) is None
    assert await _news_seq(store, group_id, idle) == 2
    # The next event signals exactly the covered readers again.
    assert sorted((await _send(store, group_id, owner, "third")).members) == sorted(
        [reached, behind]
    )


async def test_reads_of_one_page_at_once_share_it_and_keep_nothing(
    store: Store, settings: Settings
) -> None:
    group_id, (owner, *_) = await _large_group(store, settings)
    await _send(store, group_id, owner, "one")
    pages = await asyncio.gather(*(store.groups.events(group_id, 0, 100) for _ in range(5)))
    assert all([e.seq for e in page] == [1, 2] for page in pages)
    await _send(store, group_id, owner, "two")
    # Asked after the send committed: the page has it (no answer outlives its query).
    assert [e.seq for e in await store.groups.events(group_id, 0, 100)] == [1, 2, 3]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True, scope="module")
async def test_covers_arriving_during_a_cover_wait_and_go_together(
    store: Store, settings: Settings
) -> None:
    """PostgreSQL: a cover waits for an event in flight; covers of the same group that
    arrive meanwhile wait in the process (not on the database) and form the next batch,
    which reads the latest seq after the event: the reader whose read reached it is
    covered, the others keep their news."""
    group_id, (owner, first, reached, behind, *_) = await _large_group(store, settings)
    await _send(store, group_id, owner, "one")  # everyone holds news at seq 2
    async with store.groups.work() as work:
        row = await work.lock(group_id)
        assert row is not None
        await work.lock_users([], news=True)
        appended = await work.append_event("title_changed", owner, {"title": "x"}, [], news=True)
        assert appended.seq == 3
        waiting = asyncio.create_task(store.groups.cover(group_id, first, 2))
        await _until_waiting_on_a_lock(store, waiting)
        # A reader that already read the event in flight (it will have committed by the
        # time its cover runs) and one that did not.
        joining = [
            asyncio.create_task(store.groups.cover(group_id, reached, 3)),
            asyncio.create_task(store.groups.cover(group_id, behind, 2)),
        ]
        for _ in range(10):
            await asyncio.sleep(0)
        assert await lock_waiters(store, "%FOR SHARE%") == 1  # the first cover alone is on the row
        assert not waiting.done()
        assert not any(t.done() for t in joining)
    assert await waiting == 3  # it read the log to 2: nothing cleared
    assert await asyncio.gather(*joining) == [3, 3]
    assert await _news_seq(store, group_id, first) == 2
    assert await _news_seq(store, group_id, reached) is None
    assert await _news_seq(store, group_id, behind) == 2


async def _until_waiting_on_a_lock(store: Store, task: asyncio.Task[int]) -> None:
    while not task.done():
        if await lock_waiters(store, "%FOR SHARE%") > 0:
            return
        await asyncio.sleep(0.01)


async def test_membership_in_a_large_group(store: Store, settings: Settings) -> None:
    group_id, users = await _large_group(store, settings)
    owner = users[0]
    await _send(store, group_id, owner, "hi")  # every member now holds news at seq 2
    (newcomer,) = await add_users(store, 1, "new")
    changed = await members.add_members(store.groups, settings, owner, group_id, [newcomer])
    assert changed.body["group"]["member_count"] == 6
    assert changed.woken == [newcomer]  # the others hold news already
    # The one added gets its event directly; having every event up to it, no news yet.
    stream = await _entries(store, newcomer)
    assert [kind for kind, _ in stream] == ["group"]
    assert stream[0][1]["event"]["kind"] == "member_added"
    assert await _news_seq(store, group_id, newcomer) is None
    # The next event signals it (at a seq above its position), and it alone.
    assert (await _send(store, group_id, owner, "and you")).members == [newcomer]
    assert await _news(store, newcomer, group_id) == [4]

    removed = users[2]
    before = len(await _entries(store, removed))
    await members.remove_member(store.groups, settings, owner, group_id, removed)
    stream = await _entries(store, removed)
    assert len(stream) == before + 1
    assert stream[-1][1]["event"]["kind"] == "member_removed"
    await _send(store, group_id, owner, "without them")
    assert len(await _entries(store, removed)) == before + 1


async def test_bulk_add_locks_and_counts_without_reading_the_group(
    store: Store, settings: Settings
) -> None:
    group_id, users = await _large_group(store, settings)
    batch = await add_users(store, 300, "bulk")
    changed = await members.add_members(
        store.groups, settings, users[0], group_id, [*batch, users[1]]
    )
    group = changed.body["group"]
    assert group["member_count"] == 305
    assert group["latest_seq"] == 301
    log = await store.groups.events(group_id, 1, 1000)
    assert [e.kind for e in log] == ["member_added"] * 300
    # Each added member: its own event, then news from the batch's next event; the last
    # one added has every event there is.
    added = sorted(batch)
    first = await _entries(store, added[0])
    assert [kind for kind, _ in first] == ["group", "group_news"]
    assert first[0][1]["event"]["seq"] == 2
    assert first[1][1]["seq"] == 3
    assert [kind for kind, _ in await _entries(store, added[-1])] == ["group"]
    # The existing members got one news entry for the whole batch.
    assert await _news(store, users[1], group_id) == [2]
    sent = await _send(store, group_id, users[3], "to 305")
    assert sent.members == [added[-1]]


async def test_bulk_add_writes_each_its_event_then_news_and_the_unnoticed_theirs(
    store: Store, settings: Settings
) -> None:
    """A bulk add to a large group, entry by entry: each added user gets its own event at
    its next version and joins at it, then (but the last) news from the batch's next event
    at the version after; a member holding no news gets one entry at the batch's first
    event; a member holding news gets nothing."""
    group_id, (owner, holding, reader, *_) = await _large_group(store, settings)
    await _send(store, group_id, owner, "hi")  # everyone holds news at seq 2
    await messages.events(store.groups, group_id, reader, None, 100)  # the reader's is covered
    before = {u: (await store.inbox.read_page(u, 0, 100)).entries for u in (owner, holding)}
    reader_version = (await store.inbox.read_page(reader, 0, 100)).latest_version
    batch = sorted(await add_users(store, 3, "bulk"))
    changed = await members.add_members(
        store.groups, settings, owner, group_id, [batch[2], holding, batch[0], batch[1]]
    )
    assert changed.woken == sorted([*batch, reader])
    assert changed.body["group"]["latest_seq"] == 5
    log = await store.groups.events(group_id, 2, 100)
    assert [(e.seq, e.kind, e.actor, orjson.loads(e.data)) for e in log] == [
        (3 + i, "member_added", owner, {"user_id": user}) for i, user in enumerate(batch)
    ]
    for i, (user, event) in enumerate(zip(batch, log, strict=True)):
        entries = (await store.inbox.read_page(user, 0, 100)).entries
        logged = orjson.loads(orjson.dumps(render.event(event)))
        expected = [(1, "group", {"group_id": group_id, "event": logged})]
        if i < len(batch) - 1:
            expected.append((2, "group_news", {"group_id": group_id, "seq": event.seq + 1}))
        assert [(e.version, e.kind, orjson.loads(e.data)) for e in entries] == expected
        assert {e.created_at for e in entries} == {event.created_at}
        found = await store.groups.view(group_id, user)
        assert found is not None
        news = event.seq + 1 if i < len(batch) - 1 else None
        assert found[1] == MemberRow(user, "member", event.seq, event.seq, news)
    page = await store.inbox.read_page(reader, reader_version, 100)
    assert [(e.version, e.kind, orjson.loads(e.data)) for e in page.entries] == [
        (reader_version + 1, "group_news", {"group_id": group_id, "seq": 3})
    ]
    assert await _news_seq(store, group_id, reader) == 3
    for user in (owner, holding):
        assert (await store.inbox.read_page(user, 0, 100)).entries == before[user]
        assert await _news_seq(store, group_id, user) == 2


async def test_a_send_marks_the_pushers_of_those_it_gave_news(
    store: Store, settings: Settings
) -> None:
    group_id, (owner, reader, idle, *_) = await _large_group(store, settings)
    pushers = {}
    for user in (owner, reader, idle):
        pushers[user] = await add_pusher(store, user, await add_device(store, user))
    sent = await store.groups.send(group_id, owner, "one", None, 30.0)
    assert sent is not None
    due = await _due(store)
    # Every member got news and is pushed, but the sender's own devices.
    assert due[pushers[owner]] is None
    assert due[pushers[reader]] is not None
    assert due[pushers[idle]] is not None
    await _settle(store)
    # A member holding news gets no entry, so no push; one whose news a read covered does.
    await messages.events(store.groups, group_id, reader, None, 100)
    again = await store.groups.send(group_id, owner, "two", None, 30.0)
    assert again is not None
    assert again.members == [reader]
    due = await _due(store)
    assert due[pushers[reader]] is not None
    assert due[pushers[idle]] is None


async def _due(store: Store) -> dict[str, datetime | None]:
    async with store.db.session() as session:
        rows = await session.execute(select(Pusher.pushkey, Pusher.due_at))
        return {row.pushkey: row.due_at for row in rows}


async def _settle(store: Store) -> None:
    async with store.db.session() as session, session.begin():
        await session.execute(update(Pusher).values(due_at=None))
