"""The async client against a real server: recovery, session end, the outbox's states."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from conftest import PASSWORD, new_user
from msgsync_client import (
    Applied,
    Client,
    Entry,
    Handlers,
    MemoryStore,
    Message,
    NotLoggedIn,
    OutboxItem,
    OutboxState,
    Page,
    Recall,
    SqliteStore,
    SyncClient,
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


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_rewritten_history_is_dropped_and_synced_again_from_0(
    server_url: str, tmp_path: Path, kind: str
) -> None:
    """The device saw, at version 2, a message the server no longer has (a replica that
    missed it was promoted, and version 2 went to another message): the server answers
    409 history_rewritten to the cursor's since_id, and the client ends with exactly the
    server's history, nothing vanished kept."""
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    resets: list[int] = []
    store: MemoryStore | SqliteStore = (
        MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "a.db")
    )
    async with Client(store, server_url, handlers=Handlers(on_reset=resets.append)) as a:
        await a.login(alice, PASSWORD)
        first = await a.send(bob, "one")
        await a.catch_up()
        assert store.cursor() == 1
        assert store.cursor_id() is not None
        second = await a.send(bob, "two")
        third = await a.send(bob, "three")
        # What the device had applied before the history was rewritten: version 2 held a
        # message that is gone now, with an id that a later send was given again.
        vanished = Message(third.message_id or 0, alice, bob, "vanished", None, "t", None)
        entry = Entry(2, "message", "t", vanished.to_json(), "0123456789abcdef")
        store.apply_page(Page([entry], 2, 2, False, False))
        assert store.cursor_id() == "0123456789abcdef"
        result = await a.catch_up()
        assert result.recovered
        assert resets == [3]
        assert [(m.id, m.body) for m in store.messages()] == [
            (first.message_id, "one"),
            (second.message_id, "two"),
            (third.message_id, "three"),
        ]
        assert store.cursor() == 3
        assert [v for v, _ in store.applied()] == [1, 2, 3]
        # The cursor's id is the server's now: the next sync is served, no further reset.
        assert (await a.catch_up()).recovered is False
        kept = store.cursor_id()
    if kind == "sqlite":
        reopened = SqliteStore(tmp_path / "a.db")
        assert reopened.cursor_id() == kept is not None
        reopened.reset_stream()
        assert (reopened.cursor(), reopened.cursor_id()) == (0, None)
        reopened.close()


async def test_the_cursor_id_is_the_entry_at_the_cursor(server_url: str) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    store = MemoryStore()
    async with Client(store, server_url) as a:
        await a.login(alice, PASSWORD)
        await a.send(bob, "one")
        page = await a.api.sync(0, 10)
        await a.catch_up()
        assert page.entries[-1].id is not None
        assert store.cursor_id() == page.entries[-1].id
        # A page that moves the cursor past its last entry leaves no id to check.
        store.apply_page(Page([], 1, 1, False, False))
        assert store.cursor_id() == page.entries[-1].id  # did not move
        store.apply_page(Page([], 5, 5, False, False))
        assert store.cursor_id() is None


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


class _Faulty(httpx.AsyncBaseTransport):
    """The real server, except what a test breaks: `POST /logout` answered 503 or never
    reaching it, and `GET /sync` answers held until the test lets them through."""

    def __init__(self, logout: str | None = None) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self.logout = logout
        self.hold_sync: asyncio.Event | None = None
        self.sync_answered = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/logout" and self.logout == "unreachable":
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/logout" and self.logout == "503":
            return httpx.Response(503, json={"code": "database_unavailable"})
        response = await self._real.handle_async_request(request)
        if request.url.path == "/sync" and self.hold_sync is not None:
            await response.aread()
            self.sync_answered.set()
            await self.hold_sync.wait()
        return response

    async def aclose(self) -> None:
        await self._real.aclose()


def _send(server_url: str, sender: str, to: str, count: int) -> None:
    token = httpx.post(
        f"{server_url}/login", json={"user_id": sender, "password": PASSWORD}
    ).json()["access_token"]
    for n in range(count):
        httpx.post(
            f"{server_url}/messages",
            json={"to": to, "body": f"for {to} {n}"},
            headers={"authorization": f"Bearer {token}"},
        ).raise_for_status()


@pytest.mark.parametrize("logout", [None, "503", "unreachable"])
async def test_login_after_logout_on_one_store_starts_clean(
    server_url: str, tmp_path: Path, logout: str | None
) -> None:
    """The issue's reproduction: login(a); catch_up(); logout(); login(b); catch_up() on one
    SqliteStore, b with more entries than a's cursor. Also when the logout request fails."""
    alice, bob, carol = (new_user(server_url, n) for n in ("alice", "bob", "carol"))
    _send(server_url, carol, alice, 2)
    _send(server_url, carol, bob, 6)
    transport = _Faulty(logout)
    async with httpx.AsyncClient(transport=transport) as http:
        client = Client(SqliteStore(tmp_path / "shared.db"), server_url, http=http)
        await client.login(alice, PASSWORD)
        await client.send(carol, "alice's note")
        client.enqueue(carol, "alice's unsent note")  # pending: never delivered as bob
        assert (await client.catch_up()).cursor == 3
        assert await client.logout() is (logout is None)
        store = client.store
        assert store.session() is None
        assert client.api.token is None
        assert (store.cursor(), store.messages(), store.reads(), store.outbox()) == (0, [], [], [])
        with pytest.raises(NotLoggedIn):
            client.enqueue(carol, "after logout")

        await client.login(bob, PASSWORD)
        assert await client.resume_outbox() == []
        result = await client.catch_up()
        assert result.cursor == 6
        assert store.applied() == [(v, "message") for v in range(1, 7)]
        assert [m.body for m in store.messages()] == [f"for {bob} {n}" for n in range(6)]
        await client.aclose()


async def test_a_store_with_data_and_no_session_is_cleared_at_login(
    server_url: str, tmp_path: Path
) -> None:
    """What a crash mid-logout, or an older SDK's logout, leaves: no session, a stream."""
    bob = new_user(server_url, "bob")
    store = SqliteStore(tmp_path / "left.db")
    store.add_outbox(OutboxItem("c1", "carol", "someone's unsent note", OutboxState.PENDING))
    store.apply_page(Page([], 40, 40, False, False))
    async with Client(store, server_url) as client:
        await client.login(bob, PASSWORD)
        assert (store.cursor(), store.outbox()) == (0, [])


async def test_the_same_user_logging_in_again_keeps_the_store(server_url: str) -> None:
    """A re-login of the same account on the same device (its session ended, say with a
    401) continues where it was: its stream and its pending sends are its own."""
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    _send(server_url, bob, alice, 3)
    store = MemoryStore()
    async with Client(store, server_url) as client:
        first = await client.login(alice, PASSWORD)
        await client.catch_up()
        pending = client.enqueue(bob, "still mine")
        second = await client.login(alice, PASSWORD)
        assert second.device_id != first.device_id
        assert store.cursor() == 3
        assert len(store.messages()) == 3
        assert store.outbox() == [pending]


async def test_a_page_in_flight_at_logout_is_not_applied(server_url: str) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    _send(server_url, bob, alice, 2)
    transport = _Faulty()
    transport.hold_sync = asyncio.Event()
    async with httpx.AsyncClient(transport=transport) as http:
        client = Client(MemoryStore(), server_url, http=http)
        await client.login(alice, PASSWORD)
        syncing = asyncio.create_task(client.catch_up())
        await transport.sync_answered.wait()  # the server answered; the SDK has not seen it
        assert await client.logout()
        transport.hold_sync.set()
        with pytest.raises(NotLoggedIn):
            await syncing
        assert (client.store.cursor(), client.store.messages()) == (0, [])
        await client.aclose()


def test_the_blocking_facade_logs_out_and_forgets(server_url: str, tmp_path: Path) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    _send(server_url, bob, alice, 1)
    with SyncClient(SqliteStore(tmp_path / "s.db"), server_url) as client:
        client.login(alice, PASSWORD)
        client.catch_up()
        assert client.logout() is True
        store = client.client.store
        assert (store.session(), store.cursor(), store.messages()) == (None, 0, [])


class _SlowStore(MemoryStore):
    """A store whose page writes wait for the test: a logout arrives mid-write."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()
        self.go_on = threading.Event()

    def apply_page(self, page: Page) -> Applied:
        self.writing.set()
        self.go_on.wait(10)
        return super().apply_page(page)


async def test_a_logout_during_a_page_write_waits_for_it_then_clears_it(server_url: str) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    _send(server_url, bob, alice, 2)
    heard: list[Message] = []
    store = _SlowStore()
    async with Client(store, server_url, handlers=Handlers(on_message=heard.append)) as client:
        await client.login(alice, PASSWORD)
        syncing = asyncio.create_task(client.catch_up())
        await asyncio.to_thread(store.writing.wait, 10)
        logout = asyncio.create_task(client.logout())
        await asyncio.sleep(0.05)
        assert not logout.done()  # the clear waits for the page being written
        store.go_on.set()
        with pytest.raises(NotLoggedIn):
            await syncing
        assert await logout
        assert (store.cursor(), store.messages(), heard) == (0, [], [])
