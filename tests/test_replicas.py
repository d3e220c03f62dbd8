"""Reads from a real streaming replica (a primary and a replica of the test's own): pages
served by the replica are never wrong, and whatever it lacks the primary answers."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from app.db.migrations import upgrade_to_head
from app.main import create_app
from app.store.postgresql import inbox as pg_inbox
from tests.conftest import make_settings
from tests.factories import Device, register, send, sync
from tests.replication import VERSION, Pair, streaming_pair

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with streaming_pair() as made:
        with psycopg.connect(made.url(made.primary_port), autocommit=True) as conn:
            conn.execute("CREATE DATABASE msgsync")
        upgrade_to_head(made.url(made.primary_port, "msgsync"))
        made.wait_replayed()
        yield made


async def _app(pair: Pair, **overrides: object) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        pair.url(pair.primary_port, "msgsync"),
        database_replica_urls=pair.url(pair.replica_port, "msgsync"),
        **overrides,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(pair: Pair) -> AsyncIterator[httpx.AsyncClient]:
    async for application in _app(pair):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:
            yield c


async def _replica_cluster(pair: Pair, action: str) -> None:
    command = ["pg_ctlcluster", VERSION, pair.names[1], action]
    await asyncio.to_thread(subprocess.run, command, check=True)


async def _bodies(client: httpx.AsyncClient, device: Device, **params: object) -> list[str]:
    page = await sync(client, device, **params)
    return [e["data"]["body"] for e in page["entries"]]


async def test_pages_from_the_replica_and_the_primary_for_what_it_lacks(
    pair: Pair, client: httpx.AsyncClient
) -> None:
    ready = (await client.get("/readyz")).json()
    # Serving, within the allowed lag (5 s by default): the primary's last writes (the
    # schema, other tests' databases) may still be replaying on a loaded machine.
    [replica] = ready["replicas"]
    assert replica["replica"] == 1
    assert replica["serving"] is True
    assert 0.0 <= replica["lag_seconds"] <= 5.0
    alice, bob = await register(client), await register(client)  # writes: the primary
    for i in range(5):
        await send(client, alice, bob.user_id, f"m{i}")
    await asyncio.to_thread(pair.wait_replayed)
    pair.set_replay_paused(True)  # the replica now lags behind the primary
    try:
        for i in range(5, 8):
            await send(client, alice, bob.user_id, f"m{i}")
        # The replica serves what it has: a gap-free prefix (the primary has 8).
        assert await _bodies(client, bob, since=0) == [f"m{i}" for i in range(5)]
        # Nothing new on the replica: the primary answers at once.
        assert await _bodies(client, bob, since=5) == ["m5", "m6", "m7"]
        # `since` ahead of the replica: the primary answers, not a false 409 since_ahead.
        assert await _bodies(client, bob, since=7) == ["m7"]
        # A long-poll woken for a version the replica has not replayed does not sleep
        # again until its timeout: it reads the primary.
        poll = asyncio.create_task(
            client.get("/sync", params={"since": 8, "timeout": 60}, headers=bob.headers)
        )
        await asyncio.sleep(0.2)
        await send(client, alice, bob.user_id, "wake")
        async with asyncio.timeout(30):
            woken = await poll
        assert [e["data"]["body"] for e in woken.json()["entries"]] == ["wake"]
    finally:
        pair.set_replay_paused(False)


async def test_a_lagging_or_stopped_replica_is_skipped(pair: Pair) -> None:
    async for application in _app(pair, replica_max_lag_seconds=0.5):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:
            replicas = application.state.db.replicas
            alice, bob = await register(c), await register(c)
            await send(c, alice, bob.user_id, "before")
            pair.set_replay_paused(True)
            try:
                await send(c, alice, bob.user_id, "while paused")
                for _ in range(100):  # until the lag passes the setting (0.5 s)
                    await replicas.check()
                    if not replicas.all[0].serving:
                        break
                    await asyncio.sleep(0.1)
                status = (await c.get("/readyz")).json()["replicas"][0]
                assert status["serving"] is False
                assert status["problem"] == "lagging more than 0.5 s"
                # Skipped: the primary serves the whole page.
                assert await _bodies(c, bob, since=0) == ["before", "while paused"]
            finally:
                pair.set_replay_paused(False)

            await _replica_cluster(pair, "stop")
            try:
                await replicas.check()
                ready = await c.get("/readyz")
                assert ready.status_code == 200  # a replica is optional
                assert ready.json()["replicas"][0]["problem"] == "unreachable"
                assert str(pair.replica_port) not in ready.text
                await send(c, alice, bob.user_id, "replica down")
                assert (await _bodies(c, bob, since=2)) == ["replica down"]
            finally:
                await _replica_cluster(pair, "start")
            for _ in range(100):
                await replicas.check()
                if replicas.all[0].serving:
                    break
                await asyncio.sleep(0.1)
            assert replicas.all[0].serving


async def test_a_device_syncs_its_own_writes_even_from_a_lagging_replica(
    pair: Pair, client: httpx.AsyncClient
) -> None:
    """Read your writes: after its own send or read receipt, a device's sync is never
    answered by a replica that has not replayed it (the others' syncs still are)."""
    alice, bob = await register(client), await register(client)
    first = await send(client, alice, bob.user_id, "first")
    await asyncio.to_thread(pair.wait_replayed)
    pair.set_replay_paused(True)
    try:
        second = await send(client, alice, bob.user_id, "second")
        # Alice's own send is in her next sync, though the replica lacks it...
        assert await _bodies(client, alice, since=0) == ["first", "second"]
        # ...while Bob, who wrote nothing, is still served the replica's shorter page.
        assert await _bodies(client, bob, since=0) == ["first"]
        # Bob's read receipt: his next sync has it (and Alice's second message with it).
        read = await client.post(
            f"/conversations/{alice.user_id}/read",
            json={"up_to_message_id": second["message"]["id"]},
            headers=bob.headers,
        )
        assert read.status_code == 200, read.text
        page = await sync(client, bob, since=0)
        assert [e["kind"] for e in page["entries"]] == ["message", "message", "read"]
        assert page["entries"][-1]["version"] == read.json()["version"]
        assert first["version"] == 1
    finally:
        pair.set_replay_paused(False)


async def test_history_and_conversations_read_the_replica(
    pair: Pair, client: httpx.AsyncClient
) -> None:
    alice, bob = await register(client), await register(client)
    await send(client, alice, bob.user_id, "first")
    await asyncio.to_thread(pair.wait_replayed)

    async def seen_by_bob() -> tuple[list[str], str]:
        history = await client.get(f"/conversations/{alice.user_id}/messages", headers=bob.headers)
        listed = await client.get("/conversations", headers=bob.headers)
        assert history.status_code == listed.status_code == 200
        (conversation,) = listed.json()["conversations"]
        bodies = [m["body"] for m in history.json()["messages"]]
        return bodies, conversation["last_message"]["body"]

    pair.set_replay_paused(True)
    try:
        await send(client, alice, bob.user_id, "second")
        # Served by the replica (the primary has "second"): a moment old, never torn.
        assert await seen_by_bob() == (["first"], "first")
    finally:
        pair.set_replay_paused(False)
    await asyncio.to_thread(pair.wait_replayed)
    assert await seen_by_bob() == (["second", "first"], "second")


async def test_a_woken_long_poll_reads_the_primary(
    pair: Pair, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Woken for versions the replica has not replayed, every long-poll answers at once with
    all of them, in order, with no gap; it never goes back to sleep, and asks the replica
    nothing after it was woken (the commit that woke it is on the primary)."""
    replica_reads: list[int] = []
    fetch = pg_inbox._from_replica

    async def counted(replica: Any, user_id: str, since: int, limit: int, *rest: Any) -> Any:
        replica_reads.append(since)
        return await fetch(replica, user_id, since, limit, *rest)

    monkeypatch.setattr(pg_inbox, "_from_replica", counted)
    alice, bob = await register(client), await register(client)
    await send(client, alice, bob.user_id, "before")
    await asyncio.to_thread(pair.wait_replayed)
    pair.set_replay_paused(True)  # from here on, every version is beyond the replica
    try:
        since = 1
        bodies: list[str] = []
        sent: list[str] = []

        async def catch_up() -> None:  # what a woken page lacked (a burst's later sends)
            nonlocal since
            while page := await sync(client, bob, since=since):
                if not page["entries"]:
                    return
                bodies.extend(e["data"]["body"] for e in page["entries"])
                since = page["next_since"]

        for round_ in range(4):
            await catch_up()
            poll = asyncio.create_task(
                client.get("/sync", params={"since": since, "timeout": 60}, headers=bob.headers)
            )
            await asyncio.sleep(0.3)  # parked: its first read found nothing new
            assert not poll.done()
            reads_before_wake = len(replica_reads)
            burst = [f"r{round_}m{i}" for i in range(round_ + 1)]
            await asyncio.gather(*(send(client, alice, bob.user_id, b) for b in burst))
            sent += burst
            async with asyncio.timeout(20):  # far inside its 60 s: woken, not timed out
                response = await poll
            assert response.status_code == 200, response.text
            page = response.json()
            versions = [e["version"] for e in page["entries"]]
            assert versions == list(range(since + 1, since + 1 + len(versions)))  # no gap
            assert versions, "woken with nothing"
            assert len(replica_reads) == reads_before_wake  # the wake-up read the primary
            bodies += [e["data"]["body"] for e in page["entries"]]
            since = page["next_since"]
        await catch_up()
        assert sorted(bodies) == sorted(sent)  # each once, none lost
    finally:
        pair.set_replay_paused(False)
