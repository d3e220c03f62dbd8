"""The group scenarios: every SDK, through its adapter, against real servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conformance.harness import Backend, Direct
from conformance.proxy import Fault, FaultProxy
from conformance.test_scenarios import Start, assert_each_version_once, device


def settled(state: dict[str, Any], group_id: str) -> dict[str, Any]:
    """The adapter's view of one group, nothing left to read or fetch."""
    (group,) = [g for g in state["groups"] if g["group_id"] == group_id]
    assert group["pending"] is False, group
    return {k: v for k, v in group.items() if k != "pending"}


def of_group(state: dict[str, Any], group_id: str) -> list[dict[str, Any]]:
    return [m for m in state["group_messages"] if m["group_id"] == group_id]


def seq_of(message: dict[str, Any]) -> int:
    seq: int = message["seq"]
    return seq


def test_concurrent_senders_in_a_group_each_member_gets_every_message_once(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob, carol = direct.user("alice"), direct.user("bob"), direct.user("carol")
    gid = direct.create_group(alice, "Concurrent", [bob, carol])
    members = {u: device(adapters, proxy, tmp_path / u, u) for u in (alice, bob, carol)}
    rounds = 8
    for n in range(rounds):
        # The three SDKs send at once: each request is written before any answer is read.
        asked = {
            u: sdk.request("group_send", group_id=gid, body=f"{u} {n}")
            for u, sdk in members.items()
        }
        for user, request_id in asked.items():
            assert members[user].answer(request_id)["state"] == "sent"
    direct.send(bob, alice, 3)  # direct messages interleave with the group's
    truth = direct.group_messages(alice, gid)
    assert len(truth) == 3 * rounds
    # The group's seqs: gap-free after `created` (1), one per message.
    assert sorted(m["seq"] for m in truth) == list(range(2, 2 + 3 * rounds))
    for user, sdk in members.items():
        sdk.call("sync")
        state = sdk.call("state")
        assert_each_version_once(state, len(state["applied"]))
        assert of_group(state, gid) == truth, user
        assert settled(state, gid) == direct.group_view(user, gid), user
        # The app heard of each message once, in the group's order.
        assert state["heard"] == [[gid, m["seq"]] for m in sorted(truth, key=seq_of)], user
        # Each member's own messages carry the client_msg_id it sent with.
        own = [m for m in of_group(state, gid) if m["from"] == user]
        assert len(own) == rounds
        assert all(m["client_msg_id"] for m in own)


def test_a_member_added_and_removed_mid_stream(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob, carol = direct.user("alice"), direct.user("bob"), direct.user("carol")
    owner = device(adapters, proxy, tmp_path / "alice", alice)
    gid = owner.call("create_group", title="Comings and goings", members=[bob])["group_id"]
    # bob follows a page at a time, a few entries per page, while the group changes.
    follower = device(adapters, proxy, tmp_path / "bob", bob, page_limit=2)
    newcomer = device(adapters, proxy, tmp_path / "carol", carol)
    owner.call("group_send", group_id=gid, body="before carol")
    follower.call("sync", max_pages=1)
    assert owner.call("add_members", group_id=gid, user_ids=[carol])["member_count"] == 3
    owner.call("group_send", group_id=gid, body="carol is in")
    follower.call("sync", max_pages=1)

    newcomer.call("sync")
    while_in = newcomer.call("state")
    # History starts at carol's joining: the message before it is not hers to see.
    assert [m["body"] for m in of_group(while_in, gid)] == ["carol is in"]
    assert settled(while_in, gid) == direct.group_view(carol, gid)

    owner.call("remove_member", group_id=gid, user_id=carol)
    owner.call("group_send", group_id=gid, body="carol is out")
    follower.call("sync")
    newcomer.call("sync")
    gone = newcomer.call("state")
    # Removed: the group and its messages are gone from carol's store; nothing after it came.
    assert (gone["groups"], gone["group_messages"]) == ([], [])
    assert [k for _, k in gone["applied"]].count("message") == 1

    owner.call("sync")
    for user, sdk in ((alice, owner), (bob, follower)):
        state = sdk.call("state")
        assert_each_version_once(state, len(state["applied"]))
        assert of_group(state, gid) == direct.group_messages(user, gid), user
        assert settled(state, gid) == direct.group_view(user, gid), user
        assert set(settled(state, gid)["members"]) == {alice, bob}


def test_a_group_message_recalled(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    gid = direct.create_group(alice, "Recall", [bob])
    ids = direct.group_send(alice, gid, 3)
    reader = device(adapters, proxy, tmp_path / "bob", bob)
    reader.call("sync")
    assert [m["body"] for m in of_group(reader.call("state"), gid)] == ["g 0", "g 1", "g 2"]
    direct.post(alice, f"/messages/{ids[1]}/recall")
    direct.group_send(alice, gid, 1, prefix="after the recall")
    reader.call("sync")
    state = reader.call("state")
    recalled = of_group(state, gid)[1]
    assert (recalled["id"], recalled["body"]) == (ids[1], "")
    assert recalled["recalled_at"] is not None
    assert of_group(state, gid) == direct.group_messages(bob, gid)
    assert settled(state, gid) == direct.group_view(bob, gid)
    # A device that starts now gets the message already recalled.
    fresh = device(adapters, proxy, tmp_path / "bob-2", bob)
    fresh.call("sync")
    assert of_group(fresh.call("state"), gid) == direct.group_messages(bob, gid)


def test_a_pruned_stream_ends_with_every_group_message_through_the_log(
    adapters: Start, proxy: FaultProxy, direct: Direct, server: Backend, tmp_path: Path
) -> None:
    alice, bob, carol = direct.user("alice"), direct.user("bob"), direct.user("carol")
    gid = direct.create_group(alice, "Pruned", [bob])
    direct.group_send(alice, gid, 2, prefix="early")
    sdk = device(adapters, proxy, tmp_path / "bob", bob, page_limit=3)
    sdk.call("sync", max_pages=1)
    # While bob is away: his group grows and talks, a direct chat too, and a second group
    # he joins late; then the offline store is pruned past his cursor.
    direct.group_send(alice, gid, 12, prefix="while away")
    direct.post(alice, f"/groups/{gid}/members", {"user_ids": [carol]})
    direct.group_send(carol, gid, 3, prefix="carol")
    direct.send(alice, bob, 4, prefix="direct")
    later = direct.create_group(carol, "Later", [])
    direct.group_send(carol, later, 2, prefix="before bob")
    direct.post(carol, f"/groups/{later}/members", {"user_ids": [bob]})
    direct.group_send(carol, later, 2, prefix="with bob")
    pruned = server.retention("--max-entries", "0")
    assert pruned

    result = sdk.call("sync")
    assert result["history_fallback"] is True
    state = sdk.call("state")
    assert state["messages"] == direct.messages(bob, [alice])
    for group_id in (gid, later):
        assert of_group(state, group_id) == direct.group_messages(bob, group_id), group_id
        assert settled(state, group_id) == direct.group_view(bob, group_id), group_id
    assert [m["body"] for m in of_group(state, later)] == ["with bob 0", "with bob 1"]
    # Caught up: another sync brings nothing new, and no group is left pending.
    before = len(state["applied"])
    sdk.call("sync")
    assert len(sdk.call("state")["applied"]) == before


def test_a_lost_answer_makes_no_second_group_and_no_second_message(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    sdk = device(adapters, proxy, tmp_path / "alice", alice)
    # The server creates the group, and the answer never arrives: the retry must be the
    # same group (one client_group_id for every attempt), not a second one.
    proxy.add(Fault("POST", "/groups", "drop_answer"))
    created = sdk.call("create_group", title="Once", members=[bob])
    attempts = proxy.requests("POST", "/groups")
    assert len(attempts) == 2
    assert len({r.body["client_group_id"] for r in attempts}) == 1
    gid = created["group_id"]
    proxy.add(Fault("POST", f"/groups/{gid}/messages", "drop_answer"))
    sent = sdk.call("group_send", group_id=gid, body="once only")
    assert sent["state"] == "sent"
    sends = proxy.requests("POST", f"/groups/{gid}/messages")
    assert {r.body["client_msg_id"] for r in sends} == {sent["client_msg_id"]}
    assert len(sends) == 2

    sdk.call("sync")
    state = sdk.call("state")
    assert [g["group_id"] for g in state["groups"]] == [gid]
    assert [(m["id"], m["body"]) for m in of_group(state, gid)] == [
        (sent["message_id"], "once only")
    ]
    assert of_group(state, gid) == direct.group_messages(alice, gid)
    # bob's stream: one group, one message.
    follower = device(adapters, proxy, tmp_path / "bob", bob)
    follower.call("sync")
    theirs = follower.call("state")
    assert [g["group_id"] for g in theirs["groups"]] == [gid]
    assert of_group(theirs, gid) == of_group(state, gid)
