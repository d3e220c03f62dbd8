"""Groups through the SDK against a real server: create, send, members, read, news, leave."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PASSWORD, new_user
from msgsync_client import (
    ApiError,
    Client,
    GroupEvent,
    Handlers,
    MemoryStore,
    Options,
    OutboxState,
    Page,
    SqliteStore,
    SyncResult,
)
from msgsync_client.models import Entry
from msgsync_client.testing import FAST_HASHING, NO_THROTTLE, running_server


async def test_a_group_reaches_every_member_with_its_messages(server_url: str) -> None:
    alice, bob, carol = (new_user(server_url, p) for p in ("alice", "bob", "carol"))
    events: list[GroupEvent] = []
    async with (
        Client(MemoryStore(), server_url) as a,
        Client(MemoryStore(), server_url, handlers=Handlers(on_group_event=events.append)) as b,
    ):
        await a.login(alice, PASSWORD)
        await b.login(bob, PASSWORD)
        group = await a.create_group("Trip", [bob, carol], client_group_id="trip-1")
        assert (group.title, group.owner, group.member_count) == ("Trip", alice, 3)
        # A retry with the same client_group_id is the same group, not a second one.
        again = await a.create_group("Trip", [bob, carol], client_group_id="trip-1")
        assert again.group_id == group.group_id

        first = await a.send_group_message(group.group_id, "hello all")
        second = await b.send_group_message(group.group_id, "hi alice")
        assert (first.state, second.state) == (OutboxState.SENT, OutboxState.SENT)

        result = await b.catch_up()
        assert [(m.sender, m.body) for m in result.messages] == [
            (alice, "hello all"),
            (bob, "hi alice"),
        ]
        assert [e.kind for e in events] == ["created"]
        state = b.store.group(group.group_id)
        assert state is not None
        assert (state.title, state.owner, state.role) == ("Trip", alice, "member")
        assert state.members == {alice: "owner", bob: "member", carol: "member"}
        assert (state.seq, state.pending_news, state.stale) == (3, False, False)
        stored = b.store.messages(group_id=group.group_id)
        assert [(m.id, m.recipient, m.seq) for m in stored] == [
            (first.message_id, None, 2),
            (second.message_id, None, 3),
        ]
        assert result.log_pages == 0  # every event came through the stream, in order


async def test_members_join_leave_and_change_roles(server_url: str) -> None:
    alice, bob, carol, dave = (new_user(server_url, p) for p in ("alice", "bob", "carol", "dave"))
    async with (
        Client(MemoryStore(), server_url) as a,
        Client(MemoryStore(), server_url) as c,
        Client(MemoryStore(), server_url) as d,
    ):
        await a.login(alice, PASSWORD)
        await c.login(carol, PASSWORD)
        await d.login(dave, PASSWORD)
        group = await a.create_group("Team", [bob])
        gid = group.group_id
        await a.send_group_message(gid, "before carol")
        await a.add_members(gid, [carol, dave])
        await a.set_role(gid, carol, "admin")
        await a.send_group_message(gid, "after carol")

        first, after = await a.group_members(gid, limit=2)
        rest, end = await a.group_members(gid, after=after, limit=2)
        assert end is None
        assert [(m.user_id, m.role) for m in first + rest] == sorted(
            [(alice, "owner"), (bob, "member"), (carol, "admin"), (dave, "member")]
        )

        # Carol joined later: she learns of the group from its member_added event, fetches
        # its details, and sees history from her joining only.
        await c.catch_up()
        state = c.store.group(gid)
        assert state is not None
        assert (state.title, state.role, state.stale) == ("Team", "admin", False)
        assert set(state.members) == {alice, bob, carol, dave}
        assert [m.body for m in c.store.messages(group_id=gid)] == ["after carol"]

        # Carol (an admin) removes dave; alice leaves: the group goes to bob or carol.
        await d.catch_up()
        assert d.store.group(gid) is not None
        await c.remove_member(gid, dave)
        await a.leave_group(gid)
        await c.send_group_message(gid, "dave and alice gone")
        await d.catch_up()
        assert d.store.group(gid) is None
        assert d.store.messages(group_id=gid) == []
        with pytest.raises(ApiError) as gone:
            await d.get_group(gid)
        assert (gone.value.status, gone.value.code) == (404, "group_not_found")
        await a.catch_up()
        assert a.store.group(gid) is None

        await c.catch_up()
        state = c.store.group(gid)
        assert state is not None
        assert set(state.members) == {bob, carol}
        assert state.owner == (await c.get_group(gid)).owner
        assert state.owner in {bob, carol}


async def test_a_read_cursor_reaches_the_readers_other_devices(server_url: str) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    async with (
        Client(MemoryStore(), server_url) as phone,
        Client(MemoryStore(), server_url) as laptop,
        Client(MemoryStore(), server_url) as b,
    ):
        await phone.login(alice, PASSWORD)
        await laptop.login(alice, PASSWORD)
        await b.login(bob, PASSWORD)
        group = await b.create_group("Reads", [alice])
        for n in range(3):
            await b.send_group_message(group.group_id, f"m{n}")
        assert await phone.read_group(group.group_id, 3) == 3
        assert await phone.read_group(group.group_id, 2) == 3  # never back
        result = await laptop.catch_up()
        assert [(r.reader, r.up_to_seq) for r in result.group_reads] == [(alice, 3)]
        state = laptop.store.group(group.group_id)
        assert state is not None
        assert state.read_seq == 3

        conversations, _ = await laptop.conversations()
        (line,) = [c for c in conversations if c.kind == "group"]
        assert (line.group_id, line.title, line.unread_count) == (group.group_id, "Reads", 1)
        assert line.last_message is not None
        assert line.last_message.body == "m2"


async def test_news_announced_before_a_crash_is_read_after_it(
    server_url: str, tmp_path: Path
) -> None:
    """A group_news entry committed with its page, then the process dies before the log is
    read: the next sync reads it, from the group's last seen seq, each event once."""
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    path = tmp_path / "bob.db"
    async with Client(MemoryStore(), server_url) as a, Client(SqliteStore(path), server_url) as b:
        await a.login(alice, PASSWORD)
        await b.login(bob, PASSWORD)
        group = await a.create_group("News", [bob])
        await a.send_group_message(group.group_id, "seen in the stream")
        await b.catch_up()
        for n in range(5):
            await a.send_group_message(group.group_id, f"read from the log {n}")
        # The page that announces the news is stored; the log read never happens.
        cursor = b.store.cursor()
        news = Entry(cursor + 1, "group_news", "t", {"group_id": group.group_id, "seq": 7})
        b.store.apply_page(Page([news], cursor + 1, cursor + 1, False, False))
    # Pages of two events: the log is read until has_more is false.
    async with Client(SqliteStore(path), server_url, Options(page_limit=2)) as again:
        state = again.store.group(group.group_id)
        assert state is not None
        assert (state.seq, state.news_seq) == (2, 7)
        result = SyncResult()
        await again.sync_groups(result)
        assert result.log_pages == 3
        state = again.store.group(group.group_id)
        assert state is not None
        assert (state.seq, state.pending_news) == (7, False)
        bodies = [m.body for m in again.store.messages(group_id=group.group_id)]
        assert bodies == ["seen in the stream"] + [f"read from the log {n}" for n in range(5)]
        # The stream then brings the same events: none is applied twice.
        result = await again.catch_up()
        assert result.messages == []
        assert len(again.store.messages(group_id=group.group_id)) == 6


async def test_a_group_send_to_a_group_one_is_not_in_fails_and_says_why(server_url: str) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    async with Client(MemoryStore(), server_url) as a, Client(MemoryStore(), server_url) as b:
        await a.login(alice, PASSWORD)
        await b.login(bob, PASSWORD)
        group = await a.create_group("Private")
        item = await b.send_group_message(group.group_id, "let me in")
        assert (item.state, item.error) == (OutboxState.FAILED, "group_not_found")
        assert item.group_id == group.group_id


@pytest.fixture(scope="module")
def large_groups_url() -> Iterator[str]:
    """A server whose groups turn large from their fourth member."""
    env = {**FAST_HASHING, **NO_THROTTLE, "MSGSYNC_GROUP_FANOUT_LIMIT": "3"}
    with running_server(env=env) as server:
        yield server.url


async def test_a_large_group_is_followed_through_its_log_each_message_heard_once_in_order(
    large_groups_url: str, tmp_path: Path
) -> None:
    url = large_groups_url
    alice, bob, carol, dave = (new_user(url, p) for p in ("alice", "bob", "carol", "dave"))
    heard: list[int | None] = []
    reader = Client(
        SqliteStore(tmp_path / "dave.db"),
        url,
        Options(page_limit=2),
        Handlers(on_message=lambda m: heard.append(m.seq)),
    )
    async with Client(MemoryStore(), url) as a, Client(MemoryStore(), url) as b, reader as d:
        await a.login(alice, PASSWORD)
        await b.login(bob, PASSWORD)
        await d.login(dave, PASSWORD)
        group = await a.create_group("Large", [bob, carol, dave])
        assert (await d.get_group(group.group_id)).large is True
        await d.catch_up()
        for n in range(3):
            await a.send_group_message(group.group_id, f"a{n}")
            await b.send_group_message(group.group_id, f"b{n}")
        # The stream holds news, not messages: the log is read two events a page until
        # has_more is false, past the seq the news named.
        result = await d.catch_up()
        assert result.log_pages >= 3
        bodies = [m.body for m in d.store.messages(group_id=group.group_id)]
        assert bodies == ["a0", "b0", "a1", "b1", "a2", "b2"]
        assert heard == [2, 3, 4, 5, 6, 7]
        state = d.store.group(group.group_id)
        assert state is not None
        assert (state.seq, state.pending_news) == (7, False)
        # The read covered the news: the next message brings news again, and it is read.
        await b.send_group_message(group.group_id, "b3")
        await d.catch_up()
        assert heard == [2, 3, 4, 5, 6, 7, 8]
