"""The conformance scenarios: every SDK, through its adapter, against real servers."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from conformance.harness import PASSWORD, Adapter, AdapterDied, AdapterError, Backend, Direct
from conformance.proxy import Fault, FaultProxy

Start = Callable[[], Adapter]

# Small values so the scenarios run fast; each scenario overrides what it is about.
FAST = {"backoff_base": 0.05, "backoff_cap": 0.5, "ack_delay": 0.2, "page_limit": 100}


def device(
    start: Start, proxy: FaultProxy, store: Path, user: str | None, **options: Any
) -> Adapter:
    """An adapter opened on `store` through the proxy, logged in as `user` if given."""
    adapter = start()
    adapter.call("open", server=proxy.url, store=str(store), options={**FAST, **options})
    if user is not None:
        adapter.call("login", user_id=user, password=PASSWORD, device_name="conformance")
    return adapter


def assert_each_version_once(state: dict[str, Any], latest: int) -> None:
    versions = [v for v, _ in state["applied"]]
    repeated = [v for v, n in Counter(versions).items() if n > 1]
    assert not repeated, f"applied twice: {repeated}"
    assert versions == list(range(1, latest + 1)), "skipped or out of order"


def test_crash_between_applying_a_page_and_storing_its_cursor(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    direct.send(bob, alice, 30)
    store = tmp_path / "alice.store"
    first = device(adapters, proxy, store, alice, page_limit=10, die_after_applying_pages=2)
    with pytest.raises(AdapterDied):
        first.call("sync")

    second = device(adapters, proxy, store, None, page_limit=10)
    # The first page and its cursor were committed; the second page was not, at all.
    assert second.call("state")["cursor"] == 10
    assert second.call("sync")["cursor"] == 30
    state = second.call("state")
    assert_each_version_once(state, 30)
    assert state["messages"] == direct.messages(alice, [bob])


def test_sigkill_mid_sync_then_reopen(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    direct.send(bob, alice, 150)
    store = tmp_path / "alice.store"
    first = device(adapters, proxy, store, alice, page_limit=5)
    first.request("sync")
    proxy.wait_for(lambda: len(proxy.requests("GET", "/sync")) >= 6)
    first.kill()

    second = device(adapters, proxy, store, None, page_limit=5)
    assert 0 < second.call("state")["cursor"] < 150
    second.call("sync")
    state = second.call("state")
    assert_each_version_once(state, 150)
    assert state["messages"] == direct.messages(alice, [bob])


def test_acks_are_delayed_and_coalesced(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    direct.send(bob, alice, 250)
    # A long delay: only the count triggers acks during the catch-up.
    sdk = device(adapters, proxy, tmp_path / "a", alice, page_limit=10, ack_every=100, ack_delay=60)
    assert sdk.call("sync")["cursor"] == 250
    sdk.call("close")
    acks = [r.body["version"] for r in proxy.requests("POST", "/ack")]
    # 25 pages, at most one ack per 100 entries plus the tail at close; never one per page.
    assert 1 <= len(acks) <= 3, acks
    assert acks == sorted(acks)
    assert acks[-1] == 250
    assert proxy.max_in_flight["POST /ack"] == 1
    devices = direct.get(alice, "/devices")["devices"]
    assert max(d["acked_version"] for d in devices) == 250


def test_a_small_batch_is_acked_after_the_delay_not_before(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    direct.send(bob, alice, 5)
    delay = 1.0
    sdk = device(adapters, proxy, tmp_path / "a", alice, ack_every=100, ack_delay=delay)
    assert sdk.call("sync")["cursor"] == 5
    # Once the delay has passed, one ack covers all of them...
    assert sdk.call("flush_acks")["acked"] == 5
    (ack,) = proxy.requests("POST", "/ack")
    assert ack.body["version"] == 5
    assert sdk.call("state")["acked"] == 5
    # ...and fewer than ack_every entries are not acked at once: the ack came no sooner
    # than the delay after the page was asked for (the entries were applied after that).
    # Measured at the proxy, this holds however slow the machine is; a little slack for
    # timers that round to the millisecond.
    first_page = proxy.requests("GET", "/sync")[0]
    assert ack.started - first_page.started >= delay - 0.05


def test_a_send_whose_answer_was_lost_is_retried_idempotently(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    sdk = device(adapters, proxy, tmp_path / "a", alice)
    proxy.add(Fault("POST", "/messages", "drop_answer"))
    sent = sdk.call("send", to=bob, body="hello once")
    assert sent["state"] == "sent"
    attempts = proxy.requests("POST", "/messages")
    assert len(attempts) == 2
    assert {r.body["client_msg_id"] for r in attempts} == {sent["client_msg_id"]}
    on_server = direct.messages(bob, [alice])
    assert [(m["id"], m["body"]) for m in on_server] == [(sent["message_id"], "hello once")]


def test_a_send_pending_at_a_crash_resumes_with_the_same_id(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    store = tmp_path / "alice.store"
    first = device(adapters, proxy, store, alice)
    proxy.add(Fault("POST", "/messages", "hold_answer"))
    first.request("send", to=bob, body="survives a crash")
    proxy.wait_for(lambda: len(direct.messages(bob, [alice])) == 1)  # the server has it
    first.kill()

    second = device(adapters, proxy, store, None)
    (pending,) = second.call("state")["outbox"]
    assert pending["state"] == "pending"
    (item,) = second.call("resume_outbox")["outbox"]
    assert item["state"] == "sent"
    assert item["client_msg_id"] == pending["client_msg_id"]
    on_server = direct.messages(bob, [alice])
    assert [m["id"] for m in on_server] == [item["message_id"]]
    assert on_server[0]["client_msg_id"] == pending["client_msg_id"]


def test_a_503_storm_and_a_cut_connection_are_ridden_out(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    direct.send(bob, alice, 20)
    sdk = device(adapters, proxy, tmp_path / "a", alice)
    proxy.add(Fault("GET", "/sync", "unavailable", times=2, retry_after=1))
    proxy.add(Fault("GET", "/sync", "drop_answer"))  # then a connection cut mid-answer
    assert sdk.call("sync")["cursor"] == 20
    syncs = proxy.requests("GET", "/sync")
    assert [r.status for r in syncs[:4]] == [503, 503, None, 200]
    for refused, retry in itertools.pairwise(syncs[:3]):
        # Retry-After is a floor; a little slack for the two clocks' rounding.
        assert retry.started - refused.started >= 0.95
    assert sdk.call("state")["messages"] == direct.messages(alice, [bob])


@pytest.mark.both_stores
def test_since_ahead_after_a_restore_recovers_without_loss_or_duplicates(
    own_server: Backend, adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    server = own_server
    alice, bob = direct.user("alice"), direct.user("bob")
    direct.send(bob, alice, 5, prefix="before backup")
    backup = server.backup()
    proxy.upstream = server.url
    direct.send(bob, alice, 5, prefix="lost in the restore")
    sdk = device(adapters, proxy, tmp_path / "a", alice)
    assert sdk.call("sync")["cursor"] == 10

    server.stop()
    proxy.upstream = server.start(backup)  # restored: the server is back at version 5
    direct.forget_tokens()
    direct.send(bob, alice, 2, prefix="after the restore")  # versions 6 and 7 again
    # alice's device was created after the backup: the restored server does not know it, so
    # its session is over (401), and a new login continues on the same store.
    with pytest.raises(AdapterError) as ended:
        sdk.call("sync")
    assert ended.value.code == "unauthorized"
    sdk.call("login", user_id=alice, password=PASSWORD, device_name="again")
    result = sdk.call("sync")
    assert result["recovered"] is True
    state = sdk.call("state")
    assert state["cursor"] == 7
    assert_each_version_once(state, 7)
    truth = direct.messages(alice, [bob])
    assert [m["body"] for m in truth] == [f"before backup {n}" for n in range(5)] + [
        "after the restore 0",
        "after the restore 1",
    ]
    assert state["messages"] == truth


@pytest.mark.both_stores
def test_history_rewritten_after_a_restore_keeps_nothing_the_server_lost(
    own_server: Backend, adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    """The database is restored from a backup taken before the device's last sync, and the
    server has since handed the same versions (and message ids) to *more* new messages than
    were lost: the cursor is not ahead, so only the cursor entry's id tells. The device ends
    with exactly the server's history: nothing that vanished is kept, nothing duplicated."""
    server = own_server
    alice, bob = direct.user("alice"), direct.user("bob")
    direct.send(bob, alice, 5, prefix="before backup")
    sdk = device(adapters, proxy, tmp_path / "a", alice)  # its device survives the restore
    assert sdk.call("sync")["cursor"] == 5
    backup = server.backup()
    proxy.upstream = server.url
    vanished = direct.send(bob, alice, 5, prefix="lost in the restore")
    assert sdk.call("sync")["cursor"] == 10

    server.stop()
    proxy.upstream = server.start(backup)  # restored: the server is back at version 5
    direct.forget_tokens()
    after = direct.send(bob, alice, 7, prefix="after the restore")  # versions 6..12
    assert after[:5] == vanished  # the same message ids, now other messages
    first = len(proxy.requests("GET", "/sync"))
    result = sdk.call("sync")
    assert result["recovered"] is True
    syncs = proxy.requests("GET", "/sync")[first:]
    asked = parse_qs(syncs[0].query)
    assert asked["since"] == ["10"]
    assert asked.get("since_id"), "the cursor's entry id was not sent"
    assert syncs[0].status == 409
    assert parse_qs(syncs[1].query)["since"] == ["0"]
    state = sdk.call("state")
    assert state["cursor"] == 12
    assert_each_version_once(state, 12)
    truth = direct.messages(alice, [bob])
    assert [m["body"] for m in truth] == [f"before backup {n}" for n in range(5)] + [
        f"after the restore {n}" for n in range(7)
    ]
    assert state["messages"] == truth
    # Followed from here on as usual: the next sync is served, no second recovery.
    direct.send(bob, alice, 1, prefix="later")
    assert sdk.call("sync")["recovered"] is False
    assert sdk.call("state")["messages"] == direct.messages(alice, [bob])


def test_history_fallback_after_retention_keeps_every_message(
    adapters: Start, proxy: FaultProxy, direct: Direct, server: Backend, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    ids = direct.send(bob, alice, 12)
    sdk = device(adapters, proxy, tmp_path / "a", alice, page_limit=3)
    sdk.call("sync", max_pages=1)
    direct.post(bob, f"/messages/{ids[5]}/recall")
    direct.post(alice, f"/conversations/{bob}/read", {"up_to_message_id": ids[8]})
    server.retention("--max-entries", "0")

    result = sdk.call("sync")
    assert result["history_fallback"] is True
    state = sdk.call("state")
    assert state["gaps"] >= 1
    assert state["messages"] == direct.messages(alice, [bob])
    assert state["messages"][5]["body"] == ""
    assert state["messages"][5]["recalled_at"] is not None


def test_two_devices_of_one_user_converge(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path
) -> None:
    alice, bob = direct.user("alice"), direct.user("bob")
    phone = device(adapters, proxy, tmp_path / "phone", alice)
    laptop = device(adapters, proxy, tmp_path / "laptop", alice)
    ids = direct.send(bob, alice, 3)
    phone.call("sync")
    phone.call("send", to=bob, body="from the phone")
    laptop.call("send", to=bob, body="from the laptop")
    direct.post(bob, f"/messages/{ids[1]}/recall")
    direct.post(bob, f"/conversations/{alice}/read", {"up_to_message_id": ids[2]})
    direct.post(alice, f"/conversations/{bob}/read", {"up_to_message_id": ids[2]})
    phone.call("sync")
    laptop.call("sync")
    a, b = phone.call("state"), laptop.call("state")
    assert a["messages"] == b["messages"] == direct.messages(alice, [bob])
    assert len(a["messages"]) == 5
    assert a["reads"] == b["reads"]
    assert {(r["reader"], r["up_to_message_id"]) for r in a["reads"]} == {
        (bob, ids[2]),
        (alice, ids[2]),
    }
    assert a["cursor"] == b["cursor"]


@pytest.mark.parametrize(
    "how_alice_left",
    ["logout", "logout_answered_503", "logout_without_answer", "no_logout"],
)
def test_one_store_two_users_in_turn_the_second_sees_only_its_own(
    adapters: Start, proxy: FaultProxy, direct: Direct, tmp_path: Path, how_alice_left: str
) -> None:
    """A shared computer: alice uses the store, leaves, and bob logs in on the same store.
    Bob has MORE entries than alice's cursor, so the server's since_ahead cannot rescue a
    store that kept alice's cursor: only a store that forgot her makes bob's first sync
    ask since=0. Whatever happened to alice's logout request (answered, 503, no answer),
    and also when alice never logged out, nothing of hers is left or used for bob."""
    alice, bob, carol = direct.user("alice"), direct.user("bob"), direct.user("carol")
    to_alice = direct.send(carol, alice, 2, prefix="for alice")
    direct.send(carol, bob, 8, prefix="for bob")  # bob's versions 1..8
    store = tmp_path / "shared.store"

    first = device(adapters, proxy, store, alice)
    sent = first.call("send", to=carol, body="alice's private note")
    direct.post(alice, f"/conversations/{carol}/read", {"up_to_message_id": to_alice[1]})
    direct.post(carol, f"/conversations/{alice}/read", {"up_to_message_id": sent["message_id"]})
    assert first.call("sync")["cursor"] == 5
    # A send left pending by a crash: delivered by whoever resumes this outbox next.
    proxy.add(Fault("POST", "/messages", "hold_answer"))
    first.request("send", to=carol, body="alice's pending note")
    proxy.wait_for(lambda: len(direct.messages(carol, [alice])) == 4)
    first.kill()

    again = device(adapters, proxy, store, None)
    before = again.call("state")
    assert (before["user_id"], before["cursor"]) == (alice, 5)
    assert len(before["messages"]) == 3
    assert len(before["reads"]) == 2
    assert [i["state"] for i in before["outbox"]] == ["sent", "pending"]
    if how_alice_left != "no_logout":
        if how_alice_left == "logout_answered_503":
            proxy.add(Fault("POST", "/logout", "unavailable"))
        elif how_alice_left == "logout_without_answer":
            proxy.add(Fault("POST", "/logout", "drop_answer"))  # the server did it, unheard
        out = again.call("logout")
        after = again.call("state")
        assert (after["user_id"], after["cursor"]) == (None, 0)
        assert (after["messages"], after["reads"], after["applied"], after["outbox"]) == (
            [],
            [],
            [],
            [],
        )
        assert out["server_confirmed"] is (how_alice_left == "logout")
        again.close()
        # Gone from the medium too, not only from the SDK's memory.
        reopened = adapters()
        opened = reopened.call("open", server=proxy.url, store=str(store), options=FAST)
        assert (opened["logged_in"], opened["cursor"]) == (False, 0)
        assert reopened.call("state")["messages"] == []
        again = reopened
    first_sync = len(proxy.requests("GET", "/sync"))

    again.call("login", user_id=bob, password=PASSWORD, device_name="conformance")
    assert again.call("resume_outbox")["outbox"] == []
    again.call("sync")
    state = again.call("state")
    assert state["user_id"] == bob
    asked = parse_qs(proxy.requests("GET", "/sync")[first_sync].query)
    assert asked["since"] == ["0"], "bob's first sync started from alice's cursor"
    assert_each_version_once(state, 8)
    assert state["messages"] == direct.messages(bob, [carol])
    assert [m["body"] for m in state["messages"]] == [f"for bob {n}" for n in range(8)]
    assert (state["reads"], state["outbox"], state["gaps"]) == ([], [], 0)
    # Nothing of alice's outbox was sent as bob.
    assert [m["from"] for m in direct.messages(carol, [bob])] == [carol] * 8
