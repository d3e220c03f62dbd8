"""Entry ids and `since_id`: a client is told (409 history_rewritten) when the entry it saw at
its cursor is not the one stored there any more, on both databases, over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.config import Settings
from tests.factories import Device, register, send, sync, sync_all
from tests.server import Server, running_server
from tests.test_accounts import assert_problem
from tests.test_longpoll import until_waiting


def rewrite_entry(database_url: str, user_id: str, version: int, body: str) -> None:
    """What a restore or the promotion of a replica that missed commits leaves: the user's
    version `version` now names another change (a new row, hence a new entry id)."""
    engine = create_engine(
        Settings(database_url=database_url).database_url.replace("+aiosqlite", "")
    )
    try:
        with engine.begin() as conn:
            old = conn.execute(
                text(
                    "SELECT kind, created_at, message_id, data FROM inbox"
                    " WHERE user_id = :user AND version = :version"
                ),
                {"user": user_id, "version": version},
            ).one()
            conn.execute(
                text("DELETE FROM inbox WHERE user_id = :user AND version = :version"),
                {"user": user_id, "version": version},
            )
            conn.execute(
                text(
                    "INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)"
                    " VALUES (:user, :version, :kind, :created_at, :message_id, :data)"
                ),
                {
                    "user": user_id,
                    "version": version,
                    "kind": old.kind,
                    "created_at": old.created_at,
                    "message_id": old.message_id,
                    "data": old.data.replace('"body":"', f'"body":"{body}', 1),
                },
            )
    finally:
        engine.dispose()


def prune_through(database_url: str, user_id: str, floor: int) -> None:
    """What the retention job leaves: entries up to `floor` gone, the floor raised."""
    engine = create_engine(
        Settings(database_url=database_url).database_url.replace("+aiosqlite", "")
    )
    try:
        with engine.begin() as conn:
            params = {"user": user_id, "floor": floor}
            conn.execute(
                text("DELETE FROM inbox WHERE user_id = :user AND version <= :floor"), params
            )
            conn.execute(
                text("UPDATE users SET floor_version = :floor WHERE user_id = :user"), params
            )
    finally:
        engine.dispose()


async def checked(
    client: httpx.AsyncClient, device: Device, since: int, since_id: str, **params: Any
) -> httpx.Response:
    return await client.get(
        "/sync", params={"since": since, "since_id": since_id, **params}, headers=device.headers
    )


async def test_every_entry_has_its_own_id_stable_across_reads(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client), await register(client)
    for i in range(3):
        await send(client, alice, bob.user_id, f"m{i}")
    await send(client, bob, bob.user_id, "note")
    first = await sync_all(client, bob)
    again = await sync_all(client, bob)
    ids = [e["id"] for e in first]
    assert len(ids) == 4
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == 4
    assert [e["id"] for e in again] == ids
    # Alice's entries for the same messages are other entries: other ids.
    assert not set(ids) & {e["id"] for e in await sync_all(client, alice)}
    # A page from the middle carries the same ids as the full read.
    middle = await sync(client, bob, since=2)
    assert [e["id"] for e in middle["entries"]] == ids[2:]


async def test_a_matching_since_id_is_served(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client), await register(client)
    await send(client, alice, bob.user_id, "one")
    page = await sync(client, bob, since=0)
    seen = page["entries"][-1]
    await send(client, alice, bob.user_id, "two")
    response = await checked(client, bob, seen["version"], seen["id"])
    assert response.status_code == 200, response.text
    assert [e["data"]["body"] for e in response.json()["entries"]] == ["two"]
    # Nothing newer: an empty page, not a 409.
    latest = response.json()["entries"][-1]
    response = await checked(client, bob, latest["version"], latest["id"])
    assert response.status_code == 200, response.text
    assert response.json()["entries"] == []


async def test_a_rewritten_entry_is_a_409(client: httpx.AsyncClient, settings: Settings) -> None:
    alice, bob = await register(client), await register(client)
    for i in range(3):
        await send(client, alice, bob.user_id, f"m{i}")
    seen = (await sync(client, bob, since=0))["entries"][1]  # bob stands on version 2
    rewrite_entry(settings.database_url, bob.user_id, 2, "other ")
    response = await checked(client, bob, 2, seen["id"])
    assert_problem(response, 409, "history_rewritten")
    assert response.json()["latest_version"] == 3
    # The rewritten entry has an id of its own; asked with it, the stream goes on.
    now = (await sync(client, bob, since=1))["entries"][0]
    assert now["id"] != seen["id"]
    assert now["data"]["body"] == "other m1"
    response = await checked(client, bob, 2, now["id"])
    assert response.status_code == 200, response.text
    assert [e["data"]["body"] for e in response.json()["entries"]] == ["m2"]
    # Without since_id nothing is checked (clients that do not send it).
    assert (await sync(client, bob, since=2))["entries"][0]["data"]["body"] == "m2"


async def test_since_ahead_comes_first(client: httpx.AsyncClient) -> None:
    bob = await register(client)
    await send(client, bob, bob.user_id, "note")
    response = await checked(client, bob, 5, "0123abcd")
    assert_problem(response, 409, "since_ahead")
    assert response.json()["latest_version"] == 1


async def test_at_or_below_the_floor_nothing_is_checked(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    alice, bob = await register(client), await register(client)
    for i in range(4):
        await send(client, alice, bob.user_id, f"m{i}")
    entries = (await sync(client, bob, since=0))["entries"]
    prune_through(settings.database_url, bob.user_id, 2)
    # Below the floor: the history fallback serves the messages, with ids of their own.
    below = await checked(client, bob, 1, entries[0]["id"])
    assert below.status_code == 200, below.text
    page = below.json()
    assert page["history_fallback"] is True
    assert [e["data"]["body"] for e in page["entries"]] == ["m1", "m2", "m3"]
    fallback_id = page["entries"][0]["id"]
    assert fallback_id not in {e["id"] for e in entries}
    again = (await checked(client, bob, 1, entries[0]["id"])).json()["entries"][0]
    assert again["id"] == fallback_id
    # At the floor: the entry is gone, whatever since_id says.
    at = await checked(client, bob, 2, "whatever")
    assert at.status_code == 200, at.text
    assert [e["data"]["body"] for e in at.json()["entries"]] == ["m2", "m3"]
    # Above it the check holds again.
    assert (await checked(client, bob, 3, entries[2]["id"])).status_code == 200
    assert_problem(await checked(client, bob, 3, fallback_id), 409, "history_rewritten")


@pytest.mark.parametrize("since_id", ["", "x" * 65, "has space", "semi;colon"])
async def test_a_malformed_since_id_is_a_422(client: httpx.AsyncClient, since_id: str) -> None:
    bob = await register(client)
    response = await checked(client, bob, 0, since_id)
    assert_problem(response, 422, "validation_error")


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def server(request: pytest.FixtureRequest) -> Any:
    url: str = request.getfixturevalue(f"{request.param}_url")
    with running_server(url) as running:
        yield running


@pytest.mark.server
async def test_a_long_poll_woken_on_rewritten_history_is_a_409(server: Server) -> None:
    """The woken read of a long-poll checks too: the history can be rewritten while the
    device waits (a failover), and the wake-up that follows must not serve it silently."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        alice, bob = await register(client), await register(client)
        await send(client, alice, bob.user_id, "seen")
        seen = (await sync(client, bob, since=0))["entries"][0]
        # Matching: the long-poll waits, then answers with the news.
        polling = asyncio.create_task(checked(client, bob, 1, seen["id"], timeout=20))
        await until_waiting(client, 1)
        await send(client, alice, bob.user_id, "news")
        woken = await polling
        assert woken.status_code == 200, woken.text
        assert [e["data"]["body"] for e in woken.json()["entries"]] == ["news"]
        latest = woken.json()["entries"][0]
        # Rewritten while it waits: the wake-up answers 409.
        polling = asyncio.create_task(checked(client, bob, 2, latest["id"], timeout=20))
        await until_waiting(client, 1)
        await asyncio.to_thread(rewrite_entry, server.database_url, bob.user_id, 2, "other ")
        await send(client, alice, bob.user_id, "after")
        response = await polling
        assert_problem(response, 409, "history_rewritten")
        assert response.json()["latest_version"] == 3
        # Asked again, the first read (before any wait) says the same.
        assert_problem(
            await checked(client, bob, 2, latest["id"], timeout=20), 409, "history_rewritten"
        )
