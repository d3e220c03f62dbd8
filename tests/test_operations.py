"""Recall and read receipts on both databases: entries, errors, idempotence, races."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, select, update

from app.db.engine import Database
from app.db.models import InboxEntry, Message, User
from app.main import create_app
from tests.conftest import make_settings
from tests.factories import Device, login, register, send, sync, sync_all
from tests.server import running_server
from tests.test_accounts import assert_problem


@pytest.fixture
async def closed_window_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the same database whose recall window is already over for anything."""
    application = create_app(make_settings(database_url, recall_window_seconds=0))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:
            yield c


async def recall(client: httpx.AsyncClient, device: Device, message_id: int) -> httpx.Response:
    return await client.post(f"/messages/{message_id}/recall", headers=device.headers)


async def read(client: httpx.AsyncClient, device: Device, peer: str, up_to: int) -> httpx.Response:
    return await client.post(
        f"/conversations/{peer}/read", json={"up_to_message_id": up_to}, headers=device.headers
    )


async def latest(client: httpx.AsyncClient, device: Device) -> int:
    version: int = (await sync(client, device, since=0, limit=1))["latest_version"]
    return version


def assert_gap_free(entries: list[dict[str, Any]]) -> None:
    assert [e["version"] for e in entries] == list(range(1, len(entries) + 1))


async def test_recall_reaches_the_recipient_and_the_senders_other_device(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    laptop = await login(client, alice.user_id, name="laptop")
    sent = (await send(client, alice, bob.user_id, "sent too soon"))["message"]
    waiters = [app.state.notifier.subscribe(u) for u in (alice.user_id, bob.user_id)]

    response = await recall(client, alice, sent["id"])

    assert response.status_code == 200, response.text
    message = response.json()["message"]
    assert message == {**sent, "body": "", "recalled_at": message["recalled_at"]}
    assert message["recalled_at"].endswith("Z")
    assert all(w.future.done() for w in waiters)
    recall_data = {"message_id": sent["id"], "from": alice.user_id, "to": bob.user_id}
    for device in (bob, laptop):
        entries = await sync_all(client, device)
        # The original entry now shows the recall too, for devices that read it only now.
        assert [(e["version"], e["kind"], e["data"]) for e in entries] == [
            (1, "message", message),
            (2, "recall", recall_data),
        ]
    db: Database = app.state.db
    async with db.read_sessions() as session:
        stored = await session.scalar(select(Message.body).where(Message.id == sent["id"]))
    assert stored == ""  # the text is gone from the server, not only hidden


async def test_recall_of_a_note_to_oneself_takes_one_version(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    sent = (await send(client, alice, alice.user_id, "note"))["message"]
    assert (await recall(client, alice, sent["id"])).status_code == 200
    entries = await sync_all(client, alice)
    assert [(e["version"], e["kind"]) for e in entries] == [(1, "message"), (2, "recall")]


async def test_only_the_sender_recalls_and_strangers_learn_nothing(
    client: httpx.AsyncClient,
) -> None:
    alice = await register(client)
    bob = await register(client)
    carol = await register(client)
    sent = (await send(client, alice, bob.user_id, "keep me"))["message"]

    assert_problem(await recall(client, bob, sent["id"]), 403, "not_sender")
    stranger = await recall(client, carol, sent["id"])
    missing = await recall(client, carol, sent["id"] + 10_000_000)
    assert_problem(stranger, 404, "message_not_found")
    assert_problem(missing, 404, "message_not_found")
    assert_problem(await recall(client, alice, 2**63), 422, "validation_error")

    assert (await sync_all(client, bob))[0]["data"] == sent
    assert [await latest(client, d) for d in (alice, bob, carol)] == [1, 1, 0]


async def test_recall_after_the_window_is_refused(
    client: httpx.AsyncClient, closed_window_client: httpx.AsyncClient
) -> None:
    alice = await register(client)
    bob = await register(client)
    sent = (await send(client, alice, bob.user_id, "too late"))["message"]

    late = await recall(closed_window_client, alice, sent["id"])

    assert_problem(late, 409, "recall_window_passed")
    assert [e["data"] for e in await sync_all(client, bob)] == [sent]
    assert [await latest(client, d) for d in (alice, bob)] == [1, 1]


async def test_second_recall_returns_the_same_result_and_adds_nothing(
    client: httpx.AsyncClient, closed_window_client: httpx.AsyncClient
) -> None:
    alice = await register(client)
    bob = await register(client)
    sent = (await send(client, alice, bob.user_id, "oops"))["message"]
    first = await recall(client, alice, sent["id"])
    again = await recall(client, alice, sent["id"])
    # A retry that arrives after the window is still a retry, not a late recall.
    late_retry = await recall(closed_window_client, alice, sent["id"])

    assert (first.status_code, again.status_code, late_retry.status_code) == (200, 200, 200)
    assert again.json() == first.json() == late_retry.json()
    assert [await latest(client, d) for d in (alice, bob)] == [2, 2]
    assert [e["kind"] for e in await sync_all(client, bob)] == ["message", "recall"]


async def test_concurrent_recalls_of_one_message_add_one_entry(
    client: httpx.AsyncClient,
) -> None:
    alice = await register(client)
    bob = await register(client)
    sent = (await send(client, alice, bob.user_id, "racing"))["message"]
    responses = await asyncio.gather(*(recall(client, alice, sent["id"]) for _ in range(6)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1
    for device in (alice, bob):
        entries = await sync_all(client, device)
        assert_gap_free(entries)
        assert [e["kind"] for e in entries] == ["message", "recall"]


async def test_a_pruned_device_still_sees_the_recall(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await register(client)
    bob = await register(client)
    sent = (await send(client, alice, bob.user_id, "gone"))["message"]
    await recall(client, alice, sent["id"])
    await send(client, alice, bob.user_id, "after")
    # What retention does: delete a prefix of bob's entries and raise his floor past them,
    # here past the recall entry too.
    db: Database = app.state.db
    async with db.session() as session, session.begin():
        await session.execute(
            delete(InboxEntry).where(InboxEntry.user_id == bob.user_id, InboxEntry.version <= 2)
        )
        await session.execute(
            update(User).where(User.user_id == bob.user_id).values(floor_version=2)
        )

    page = await sync(client, bob, since=0)

    assert page["history_fallback"] is True
    assert [(e["kind"], e["data"]["body"]) for e in page["entries"]] == [
        ("message", ""),
        ("message", "after"),
    ]
    assert page["entries"][0]["data"]["recalled_at"] is not None


async def test_recall_after_the_original_entry_was_pruned(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await register(client)
    bob = await register(client)
    sent = (await send(client, alice, bob.user_id, "old"))["message"]
    db: Database = app.state.db
    async with db.session() as session, session.begin():
        await session.execute(delete(InboxEntry).where(InboxEntry.user_id == bob.user_id))
        await session.execute(
            update(User).where(User.user_id == bob.user_id).values(floor_version=1)
        )
    assert (await recall(client, alice, sent["id"])).status_code == 200
    page = await sync(client, bob, since=1)
    assert [(e["version"], e["kind"]) for e in page["entries"]] == [(2, "recall")]


async def test_read_receipt_reaches_the_peer_and_the_readers_other_device(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    tablet = await login(client, bob.user_id, name="tablet")
    ids = [(await send(client, alice, bob.user_id, f"m{i}"))["message"]["id"] for i in range(3)]
    waiters = [app.state.notifier.subscribe(u) for u in (alice.user_id, bob.user_id)]

    response = await read(client, bob, alice.user_id, ids[1])

    assert response.status_code == 200, response.text
    assert response.json() == {"peer": alice.user_id, "read_up_to_id": ids[1], "version": 4}
    assert all(w.future.done() for w in waiters)
    receipt = {"reader": bob.user_id, "peer": alice.user_id, "up_to_message_id": ids[1]}
    alice_entries = await sync(client, alice, since=3)
    assert [(e["version"], e["kind"], e["data"]) for e in alice_entries["entries"]] == [
        (4, "read", receipt)
    ]
    tablet_entries = await sync(client, tablet, since=3)
    assert [(e["version"], e["kind"], e["data"]) for e in tablet_entries["entries"]] == [
        (4, "read", receipt)
    ]

    # Reading up to one's own message is reading the conversation too.
    own = await read(client, alice, bob.user_id, ids[2])
    assert own.json() == {"peer": bob.user_id, "read_up_to_id": ids[2], "version": 5}


async def test_a_stale_cursor_changes_nothing(app: FastAPI, client: httpx.AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    ids = [(await send(client, alice, bob.user_id, f"m{i}"))["message"]["id"] for i in range(3)]
    await read(client, bob, alice.user_id, ids[2])
    waiters = [app.state.notifier.subscribe(u) for u in (alice.user_id, bob.user_id)]

    for up_to in (ids[0], ids[2]):
        response = await read(client, bob, alice.user_id, up_to)
        assert response.status_code == 200, response.text
        assert response.json() == {"peer": alice.user_id, "read_up_to_id": ids[2], "version": 4}

    assert not any(w.future.done() for w in waiters)
    assert [await latest(client, d) for d in (alice, bob)] == [4, 4]


async def test_read_of_a_note_to_oneself_takes_one_version(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    note = (await send(client, alice, alice.user_id, "note"))["message"]
    response = await read(client, alice, alice.user_id, note["id"])
    assert response.json() == {"peer": alice.user_id, "read_up_to_id": note["id"], "version": 2}
    assert [e["kind"] for e in await sync_all(client, alice)] == ["message", "read"]


async def test_read_needs_a_message_of_that_conversation(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    carol = await register(client)
    to_bob = (await send(client, alice, bob.user_id, "for bob"))["message"]
    to_carol = (await send(client, alice, carol.user_id, "for carol"))["message"]

    assert_problem(await read(client, bob, alice.user_id, to_carol["id"]), 404, "message_not_found")
    assert_problem(
        await read(client, bob, alice.user_id, to_carol["id"] + 10_000_000),
        404,
        "message_not_found",
    )
    assert_problem(
        await read(client, bob, carol.user_id, to_bob["id"]), 404, "conversation_not_found"
    )
    assert_problem(
        await read(client, bob, "nobody-here", to_bob["id"]), 404, "conversation_not_found"
    )
    assert_problem(await read(client, bob, alice.user_id, 0), 422, "validation_error")
    assert [await latest(client, d) for d in (alice, bob, carol)] == [2, 1, 1]


async def test_recalls_and_reads_racing_crossing_sends_keep_versions_gap_free(
    client: httpx.AsyncClient,
) -> None:
    alice = await register(client)
    bob = await register(client)
    seeds = [(await send(client, alice, bob.user_id, f"seed{i}"))["message"] for i in range(6)]
    rounds = 12
    targets = [s["id"] for s in seeds]
    random.Random(5).shuffle(targets)

    async def crossing_sends(sender: Device, to: str) -> None:
        for i in range(rounds):
            await send(client, sender, to, f"{sender.user_id}:{i}")

    async def recalls() -> list[int]:
        return [(await recall(client, alice, s["id"])).status_code for s in seeds[:4]]

    async def reads(reader: Device, peer: str) -> list[int]:
        return [(await read(client, reader, peer, t)).status_code for t in targets]

    _, _, recalled, bob_reads, alice_reads = await asyncio.gather(
        crossing_sends(alice, bob.user_id),
        crossing_sends(bob, alice.user_id),
        recalls(),
        reads(bob, alice.user_id),
        reads(alice, bob.user_id),
    )

    assert set(recalled) == set(bob_reads) == set(alice_reads) == {200}
    alice_entries = await sync_all(client, alice)
    bob_entries = await sync_all(client, bob)
    assert_gap_free(alice_entries)
    assert_gap_free(bob_entries)
    for entries in (alice_entries, bob_entries):
        kinds = [e["kind"] for e in entries]
        assert kinds.count("message") == len(seeds) + 2 * rounds
        assert kinds.count("recall") == 4
    # Both parties carry the same read receipts, and each reader's cursor only moved forward.
    receipts = [e["data"] for e in alice_entries if e["kind"] == "read"]
    assert receipts == [e["data"] for e in bob_entries if e["kind"] == "read"]
    for reader in (alice.user_id, bob.user_id):
        cursor = [r["up_to_message_id"] for r in receipts if r["reader"] == reader]
        assert cursor == sorted(set(cursor))
        assert cursor[-1] == max(targets)


@pytest.mark.server
async def test_recall_racing_crossing_sends_over_http(postgresql_url: str) -> None:
    rounds = 20
    with running_server(postgresql_url) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            alice = await register(client, "alice")
            bob = await register(client, "bob")
            seeds = [
                (await send(client, alice, bob.user_id, f"seed{i}"))["message"] for i in range(8)
            ]

            async def crossing_sends(sender: Device, to: str) -> None:
                for i in range(rounds):
                    await send(client, sender, to, f"{sender.user_id}:{i}")

            async def recall_one(message: dict[str, Any]) -> int:
                return (await recall(client, alice, message["id"])).status_code

            async def read_each() -> list[int]:
                return [
                    (await read(client, bob, alice.user_id, s["id"])).status_code for s in seeds
                ]

            results = await asyncio.gather(
                crossing_sends(alice, bob.user_id),
                crossing_sends(bob, alice.user_id),
                read_each(),
                *(recall_one(s) for s in seeds),
            )

            assert results[2] == [200] * len(seeds)
            assert results[3:] == [200] * len(seeds)
            for device in (alice, bob):
                entries = await sync_all(client, device)
                assert_gap_free(entries)
                kinds = [e["kind"] for e in entries]
                assert kinds.count("message") == len(seeds) + 2 * rounds
                assert kinds.count("recall") == len(seeds)
                recalled = [e["data"] for e in entries[: len(seeds)]]
                assert {m["body"] for m in recalled} == {""}
