"""Large groups (DESIGN.md "Groups"): every SDK, through its adapter, on a server whose
groups turn large from their fourth member (conftest.GROUP_FANOUT_LIMIT). A large group's
messages never reach the members' streams: a `group_news` entry says to read the log, and
the SDK must read it to its end, keep its position, and apply each event once, by seq."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conformance.conftest import GROUP_FANOUT_LIMIT
from conformance.harness import Adapter, Backend, Direct
from conformance.proxy import Fault, FaultProxy
from conformance.test_group_scenarios import of_group, settled
from conformance.test_scenarios import Start, assert_each_version_once, device


@pytest.fixture
def server(large_groups_server: Backend) -> Backend:
    return large_groups_server


def is_large(direct: Direct, member: str, group_id: str) -> bool:
    large: bool = direct.get(member, f"/groups/{group_id}")["group"]["large"]
    return large


def heard_in_order(truth: list[dict[str, Any]], group_id: str) -> list[list[Any]]:
    """What the app must have heard of the group's messages: each once, in seq order."""
    return [[group_id, seq] for seq in sorted(m["seq"] for m in truth)]


def assert_caught_up(sdk: Adapter, direct: Direct, user: str, group_id: str) -> dict[str, Any]:
    """The member's store holds the group as the server has it, each event once."""
    state = sdk.call("state")
    assert_each_version_once(state, len(state["applied"]))
    assert of_group(state, group_id) == direct.group_messages(user, group_id), user
    assert settled(state, group_id) == direct.group_view(user, group_id), user
    return state


def test_concurrent_senders_into_a_large_group_a_reader_hears_each_message_once_in_order(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    users = [direct.user(name) for name in ("alice", "bob", "carol", "dave", "erin")]
    alice, bob, carol, dave, _ = users
    gid = direct.create_group(alice, "Large", users[1:])
    assert len(users) > GROUP_FANOUT_LIMIT
    assert is_large(direct, alice, gid)
    senders = {u: device(adapters, proxy, tmp_path / u, u) for u in (alice, bob, carol)}
    # The reader reads the log two events a page while the senders write.
    reader = device(adapters, proxy, tmp_path / dave, dave, page_limit=2)
    rounds = 6
    for n in range(rounds):
        # The three SDKs send at once, and the reader syncs meanwhile.
        asked = {
            u: sdk.request("group_send", group_id=gid, body=f"{u} {n}")
            for u, sdk in senders.items()
        }
        syncing = reader.request("sync")
        for user, request_id in asked.items():
            assert senders[user].answer(request_id)["state"] == "sent"
        reader.answer(syncing)
    reader.call("sync")
    truth = direct.group_messages(dave, gid)
    assert len(truth) == 3 * rounds
    assert sorted(m["seq"] for m in truth) == list(range(2, 2 + 3 * rounds))
    state = assert_caught_up(reader, direct, dave, gid)
    assert state["heard"] == heard_in_order(truth, gid)
    # The senders follow the group the same way (their own sends come through the log).
    for user, sdk in senders.items():
        sdk.call("sync")
        mine = assert_caught_up(sdk, direct, user, gid)
        assert mine["heard"] == heard_in_order(truth, gid), user


@pytest.mark.parametrize("log_pages_read", [0, 1], ids=["before-the-log", "between-log-pages"])
def test_a_reader_killed_between_the_news_and_the_log_read_sees_everything(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path, log_pages_read: int
) -> None:
    users = [direct.user(name) for name in ("alice", "bob", "carol", "dave")]
    alice, bob, _, dave = users
    gid = direct.create_group(alice, "Crash", users[1:])
    assert is_large(direct, alice, gid)
    store = tmp_path / "dave.store"
    first = device(adapters, proxy, store, dave, page_limit=2)
    cursor = first.call("sync")["cursor"]
    direct.group_send(alice, gid, 5, prefix="before the crash")
    # The stream's page with the news goes through; the log read (after `log_pages_read`
    # pages of two events) never gets its answer.
    events = f"/groups/{gid}/events"
    proxy.add(Fault("GET", events, "hold_answer", after=log_pages_read))
    first.request("sync")
    proxy.wait_for(lambda: len(proxy.requests("GET", events)) > log_pages_read)
    # The page that brought the news is stored and acked: the cursor has passed the news.
    proxy.wait_for(
        lambda: any(
            r.status == 200 and r.body["version"] > cursor for r in proxy.requests("POST", "/ack")
        )
    )
    first.kill()
    direct.group_send(bob, gid, 3, prefix="while it was down")

    second = device(adapters, proxy, store, None, page_limit=2)
    (waiting,) = second.call("state")["groups"]
    assert waiting["pending"] is True  # the read it owes is in the store
    assert len(of_group(second.call("state"), gid)) == 2 * log_pages_read
    second.call("sync")
    state = assert_caught_up(second, direct, dave, gid)
    assert [m["body"] for m in of_group(state, gid)] == [
        *(f"before the crash {n}" for n in range(5)),
        *(f"while it was down {n}" for n in range(3)),
    ]
    # Each message told once by the new process: the ones the first had stored, never.
    truth = direct.group_messages(dave, gid)
    assert second.call("state")["heard"] == heard_in_order(truth[2 * log_pages_read :], gid)


def test_a_group_switching_mode_both_ways_every_member_sees_every_event_once(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob, carol, dave = (direct.user(n) for n in ("alice", "bob", "carol", "dave"))
    gid = direct.create_group(alice, "Switch", [bob, carol])
    assert not is_large(direct, alice, gid)  # at the limit: write fan-out
    # Members follow at different paces: a page of two, three, or the server's default.
    members = {
        alice: device(adapters, proxy, tmp_path / alice, alice, page_limit=3),
        bob: device(adapters, proxy, tmp_path / bob, bob, page_limit=2),
        carol: device(adapters, proxy, tmp_path / carol, carol),
    }

    def talk(prefix: str, reader: str) -> None:
        # Every member sends at once while one of them syncs.
        asked = {
            u: sdk.request("group_send", group_id=gid, body=f"{prefix} {u}")
            for u, sdk in members.items()
            if u != reader
        }
        syncing = members[reader].request("sync")
        for user, request_id in asked.items():
            assert members[user].answer(request_id)["state"] == "sent"
        members[reader].answer(syncing)

    talk("small", carol)
    members[bob].call("sync", max_pages=1)  # half-way through the small part
    # A fourth member: the group turns large.
    assert members[alice].call("add_members", group_id=gid, user_ids=[dave])["member_count"] == 4
    assert is_large(direct, alice, gid)
    members[dave] = device(adapters, proxy, tmp_path / dave, dave, page_limit=2)
    talk("large", carol)
    members[bob].call("sync", max_pages=1)
    talk("large again", bob)
    # dave has everything since his joining, once; then he leaves and it turns small.
    members[dave].call("sync")
    assert_caught_up(members[dave], direct, dave, gid)
    joined = direct.group_messages(dave, gid)
    assert members[dave].call("state")["heard"] == heard_in_order(joined, gid)
    members[dave].call("leave_group", group_id=gid)
    leaver = members.pop(dave)
    assert not is_large(direct, alice, gid)
    talk("small again", alice)
    members[carol].call("sync", max_pages=1)
    talk("small at last", carol)

    truth = direct.group_messages(alice, gid)
    # Each round, every member but the one syncing sent one.
    assert len(truth) == 2 + 3 + 3 + 2 + 2
    for user, sdk in members.items():
        sdk.call("sync")
        state = assert_caught_up(sdk, direct, user, gid)
        assert state["heard"] == heard_in_order(truth, gid), user
        assert set(settled(state, gid)["members"]) == {alice, bob, carol}
    # The one who left keeps nothing of the group, and heard nothing more of it.
    leaver.call("sync")
    gone = leaver.call("state")
    assert (gone["groups"], gone["group_messages"]) == ([], [])
    assert gone["heard"] == heard_in_order(joined, gid)
