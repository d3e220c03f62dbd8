"""Conversation list and history pages for a device that starts from nothing."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from app.db.engine import Database
from app.db.models import Conversation, Message, utcnow
from tests.factories import Device, login, register, send, send_many
from tests.test_accounts import assert_problem


async def get_json(
    client: httpx.AsyncClient, device: Device, path: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(path, params=params, headers=device.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def all_conversations(
    client: httpx.AsyncClient, device: Device, limit: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        page = await get_json(client, device, "/conversations", **params)
        rows.extend(page["conversations"])
        if page["next_before"] is None:
            return rows
        params["before"] = page["next_before"]


async def all_messages(
    client: httpx.AsyncClient, device: Device, peer: str, **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every message of the conversation, newest first, and the number of pages it took."""
    messages: list[dict[str, Any]] = []
    pages = 0
    while True:
        page = await get_json(client, device, f"/conversations/{peer}/messages", **params)
        pages += 1
        messages.extend(page["messages"])
        if page["next_before_id"] is None:
            return messages, pages
        params["before_id"] = page["next_before_id"]


async def test_new_device_lists_conversations_and_scrolls_back_to_the_first_message(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    db: Database = app.state.db
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    history = await send_many(db, alice.user_id, bob.user_id, 250, prefix="a")
    history += await send_many(db, bob.user_id, alice.user_id, 250, prefix="b")
    with_carol = await send(client, carol, bob.user_id, "hi from carol")

    tablet = await login(client, bob.user_id, name="new tablet")  # no cursor, no local state
    conversations = await all_conversations(client, tablet, limit=1)
    assert [c["peer"] for c in conversations] == [carol.user_id, alice.user_id]
    assert conversations[0]["last_message"] == with_carol["message"]
    assert conversations[1]["last_message"] == history[-1]
    # Nothing of bob's was marked read: alice's 250 and carol's one are unread, not his own.
    assert [c["unread_count"] for c in conversations] == [1, 250]

    messages, pages = await all_messages(client, tablet, alice.user_id)
    assert messages == history[::-1]
    assert pages == 10  # 50 a page by default
    # The same history from alice's side, in pages of the largest size.
    from_alice, _ = await all_messages(client, alice, bob.user_id, limit=200)
    assert from_alice == messages


async def test_conversations_page_by_newest_message(client: httpx.AsyncClient) -> None:
    alice = await register(client, "alice")
    peers = [await register(client, "peer") for _ in range(3)]
    for peer in peers:
        await send(client, alice, peer.user_id, "hello")
    await send(client, peers[0], alice.user_id, "back to you")  # moves to the top
    await send(client, alice, alice.user_id, "note to self")

    first = await get_json(client, alice, "/conversations", limit=2)
    assert [c["peer"] for c in first["conversations"]] == [alice.user_id, peers[0].user_id]
    assert first["next_before"] == first["conversations"][-1]["last_message"]["id"]
    second = await get_json(client, alice, "/conversations", limit=2, before=first["next_before"])
    assert [c["peer"] for c in second["conversations"]] == [peers[2].user_id, peers[1].user_id]
    assert second["next_before"] is None
    # One's own notes are never unread; the peer's reply is.
    unread = {c["peer"]: c["unread_count"] for c in first["conversations"]}
    assert unread == {alice.user_id: 0, peers[0].user_id: 1}


async def test_unread_count_follows_the_read_cursor_and_skips_recalled_messages(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    db: Database = app.state.db
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    sent = [(await send(client, alice, bob.user_id, f"m{i}"))["message"] for i in range(5)]
    # The read and recall endpoints land separately; set their effects on the rows directly.
    async with db.session() as session, session.begin():
        await session.execute(
            update(Conversation)
            .where(Conversation.of_pair(bob.user_id, alice.user_id))
            .values({Conversation.cursor_of(bob.user_id, alice.user_id): sent[1]["id"]})
        )
        await session.execute(
            update(Message).where(Message.id == sent[4]["id"]).values(recalled_at=utcnow())
        )
    page = await get_json(client, bob, "/conversations")
    (conversation,) = page["conversations"]
    assert conversation["unread_count"] == 2  # m2 and m3: m0-m1 read, m4 recalled
    assert conversation["last_message"]["body"] == ""
    assert conversation["last_message"]["recalled_at"] is not None
    assert (await get_json(client, alice, "/conversations"))["conversations"][0][
        "unread_count"
    ] == 0


async def test_no_one_reads_a_conversation_they_are_not_part_of(
    client: httpx.AsyncClient,
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    carol = await register(client, "carol")
    await send(client, alice, bob.user_id, "between alice and bob")

    assert (await get_json(client, carol, "/conversations"))["conversations"] == []
    for peer in (alice.user_id, bob.user_id, "nobody-at-all"):
        page = await get_json(client, carol, f"/conversations/{peer}/messages")
        assert page == {"messages": [], "next_before_id": None}
    anonymous = await client.get(f"/conversations/{bob.user_id}/messages")
    assert_problem(anonymous, 401, "unauthorized")
    assert_problem(await client.get("/conversations"), 401, "unauthorized")


async def test_history_rejects_bad_parameters(client: httpx.AsyncClient) -> None:
    alice = await register(client, "alice")
    path = f"/conversations/{alice.user_id}/messages"
    too_big = await client.get(path, params={"limit": 201}, headers=alice.headers)
    assert_problem(too_big, 422, "limit_out_of_range")
    for params in ({"limit": 0}, {"before_id": 0}, {"before_id": "x"}):
        response = await client.get(path, params=params, headers=alice.headers)
        assert_problem(response, 422, "validation_error")
    listing = await client.get("/conversations", params={"limit": 201}, headers=alice.headers)
    assert_problem(listing, 422, "limit_out_of_range")
    cursor = await client.get("/conversations", params={"before": -1}, headers=alice.headers)
    assert_problem(cursor, 422, "validation_error")
