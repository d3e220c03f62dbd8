"""The async client against a real server: recovery, session end, the outbox's states."""

from __future__ import annotations

import httpx
import pytest
from conftest import PASSWORD, new_user
from msgsync_client import (
    Client,
    Handlers,
    MemoryStore,
    Message,
    OutboxState,
    Page,
    Recall,
    Unauthorized,
)


async def test_a_store_ahead_of_the_server_recovers_without_duplicates(server_url: str) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    resets: list[int] = []
    store = MemoryStore()
    async with Client(store, server_url, handlers=Handlers(on_reset=resets.append)) as a:
        await a.login(alice, PASSWORD)
        sent = await a.send(bob, "one")
        await a.catch_up()
        # The store believes in versions the server never had (as after a restore).
        store.apply_page(Page([], 500, 500, False, False))
        result = await a.catch_up()
        assert result.recovered
        assert resets == [1]
        assert [m.id for m in store.messages()] == [sent.message_id]
        assert store.cursor() == 1


async def test_a_send_to_nobody_fails_and_says_why(server_url: str) -> None:
    alice = new_user(server_url, "alice")
    states: list[OutboxState] = []
    handlers = Handlers(on_outbox=lambda item: states.append(item.state))
    async with Client(MemoryStore(), server_url, handlers=handlers) as a:
        await a.login(alice, PASSWORD)
        item = await a.send("nobody-here", "hello?")
    assert (item.state, item.error) == (OutboxState.FAILED, "recipient_not_found")
    assert states == [OutboxState.PENDING, OutboxState.FAILED]


async def test_a_token_revoked_elsewhere_ends_the_session(server_url: str) -> None:
    alice = new_user(server_url, "alice")
    async with Client(MemoryStore(), server_url) as a:
        session = await a.login(alice, PASSWORD)
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{server_url}/logout",
                headers={"authorization": f"Bearer {session.access_token}"},
            )
            assert response.status_code == 204
        with pytest.raises(Unauthorized):
            await a.catch_up()


async def test_events_iterate_what_arrives(server_url: str) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    async with Client(MemoryStore(), server_url) as a, Client(MemoryStore(), server_url) as b:
        await a.login(alice, PASSWORD)
        await b.login(bob, PASSWORD)
        sent = await a.send(bob, "iterate me")
        events = b.events()
        first = await anext(events)
        assert isinstance(first, Message)
        assert (first.id, first.body) == (sent.message_id, "iterate me")
        await a.api.recall(first.id)
        second = await anext(events)  # through the long-poll
        assert isinstance(second, Recall)
        assert second.message_id == first.id
        await events.aclose()
