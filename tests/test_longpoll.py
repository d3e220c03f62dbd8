"""Long-poll and wake-ups over real HTTP against real uvicorn processes."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import over_backends
from tests.factories import Device, login, register, send
from tests.server import Server, running_server

pytestmark = pytest.mark.server

# Long enough that a long-poll ending before it can only have been woken.
LONG = 20.0


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    url: str = request.getfixturevalue(f"{request.param}_url")
    with running_server(url) as running:
        yield running


@asynccontextmanager
async def two_processes(
    database_url: str,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two single-process servers on one database, and a client for each."""
    with running_server(database_url) as first, running_server(database_url) as second:
        async with (
            httpx.AsyncClient(base_url=first.url) as a,
            httpx.AsyncClient(base_url=second.url) as b,
        ):
            yield a, b


async def poll(
    client: httpx.AsyncClient, device: Device, since: int, timeout: float = LONG
) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    response = await client.get(
        "/sync",
        params={"since": since, "timeout": timeout},
        headers=device.headers,
        timeout=timeout + 10,
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page, time.monotonic() - started


async def waiting(client: httpx.AsyncClient) -> int:
    text = (await client.get("/metrics")).text
    found = re.search(r"^msgsync_waiting_long_polls (\d+)(?:\.0)?$", text, re.M)
    assert found, text
    return int(found.group(1))


async def until_waiting(client: httpx.AsyncClient, count: int) -> None:
    for _ in range(200):
        if await waiting(client) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"waiters never reached {count}: {await waiting(client)}")


async def test_a_send_wakes_the_long_poll_with_the_message(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice, bob = await register(client), await register(client)
        polling = asyncio.create_task(poll(client, bob, since=0))
        await until_waiting(client, 1)
        sent = await send(client, alice, bob.user_id, "are you there?")
        page, elapsed = await polling
        assert [e["data"] for e in page["entries"]] == [sent["message"]]
        assert elapsed < LONG / 2  # woken, not timed out
        assert await waiting(client) == 0


async def test_the_timeout_returns_an_empty_page(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        bob = await register(client)
        page, elapsed = await poll(client, bob, since=0, timeout=1)
        assert page["entries"] == []
        assert (page["next_since"], page["has_more"]) == (0, False)
        assert elapsed >= 0.9
        # A long-poll with news returns at once, whatever its timeout.
        await send(client, bob, bob.user_id, "note")
        page, _ = await poll(client, bob, since=0, timeout=LONG)
        assert len(page["entries"]) == 1


async def test_no_wake_up_is_lost_between_read_and_wait(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice, bob = await register(client), await register(client)
        since = 0
        for i in range(40):
            polling = asyncio.create_task(poll(client, bob, since=since, timeout=LONG))
            # Land the send anywhere around the moment the poll reads and starts waiting.
            await asyncio.sleep(random.uniform(0, 0.004))
            await send(client, alice, bob.user_id, f"m{i}")
            page, elapsed = await polling
            assert page["entries"], f"round {i}: the long-poll timed out: a lost wake-up"
            assert elapsed < LONG / 2
            assert page["entries"][-1]["data"]["body"] == f"m{i}"
            since = page["next_since"]


async def test_a_client_that_leaves_frees_its_waiter(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        users = [await register(client) for _ in range(20)]
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=server.url, limits=limits) as leaving:
            polls = [
                asyncio.create_task(poll(leaving, users[i % len(users)], since=0))
                for i in range(200)
            ]
            await until_waiting(client, 200)
            for task in polls:
                task.cancel()  # the client hangs up: httpx closes the connection
            await asyncio.gather(*polls, return_exceptions=True)
        await until_waiting(client, 0)


async def test_one_long_poll_beyond_the_bound_ends_the_oldest_of_the_device(
    server: Server,
) -> None:
    """MSGSYNC_LONGPOLLS_PER_DEVICE (10 by default): an 11th long-poll on one token ends the
    device's oldest at once, answered as its timeout would be; the others, and the user's
    other devices, keep waiting until a send wakes them."""
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=server.url, limits=limits) as client:
        alice, bob = await register(client), await register(client)
        tablet = await login(client, bob.user_id, "tablet")
        base = await waiting(client)
        on_tablet = asyncio.create_task(poll(client, tablet, since=0))
        oldest = asyncio.create_task(poll(client, bob, since=0))
        await until_waiting(client, base + 2)
        newer = [asyncio.create_task(poll(client, bob, since=0)) for _ in range(10)]
        # Ten of the phone's wait (the oldest was ended), and the tablet's one.
        await until_waiting(client, base + 11)
        page, elapsed = await asyncio.wait_for(oldest, LONG / 2)
        assert page["entries"] == []
        assert (page["next_since"], page["has_more"]) == (0, False)
        assert elapsed < LONG / 2
        await asyncio.sleep(0.5)
        assert not any(task.done() for task in [*newer, on_tablet])
        sent = await send(client, alice, bob.user_id, "wake up")
        for page, elapsed in await asyncio.gather(*newer, on_tablet):
            assert [e["data"] for e in page["entries"]] == [sent["message"]]
            assert elapsed < LONG / 2
        assert await waiting(client) == base


async def test_a_send_in_one_process_wakes_a_long_poll_in_another(fresh_pg: str) -> None:
    async with two_processes(fresh_pg) as (a, b):
        alice, bob = await register(a), await register(a)
        polling = asyncio.create_task(poll(a, bob, since=0))
        await until_waiting(a, 1)
        sent = await send(b, alice, bob.user_id, "from the other process")
        page, elapsed = await polling
        assert [e["data"] for e in page["entries"]] == [sent["message"]]
        assert elapsed < LONG / 2


@pytest.mark.slow
async def test_two_workers_wake_long_polls_spread_over_both(fresh_pg: str) -> None:
    with running_server(fresh_pg, workers=2) as server:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.url, limits=limits) as client:
            sender = await register(client)
            devices = [await register(client) for _ in range(30)]
            polls = [asyncio.create_task(poll(client, d, since=0)) for d in devices]
            await asyncio.sleep(1.0)  # each worker answers /metrics for itself only
            for device in devices:
                await send(client, sender, device.user_id, f"hi {device.user_id}")
            results = await asyncio.gather(*polls)
            for device, (page, elapsed) in zip(devices, results, strict=True):
                assert [e["data"]["body"] for e in page["entries"]] == [f"hi {device.user_id}"]
                assert elapsed < LONG / 2


async def test_a_killed_listener_reconnects_and_wakes_its_waiters(fresh_pg: str) -> None:
    async with two_processes(fresh_pg) as (a, b):
        alice, bob = await register(a), await register(a)
        polling = asyncio.create_task(poll(a, bob, since=0))
        await until_waiting(a, 1)
        ended = over_backends(
            fresh_pg, "count(pg_terminate_backend(pid))", "application_name = 'msgsync-listener'"
        )
        assert ended == 2
        # Sent while the listeners reconnect: its NOTIFY may find nobody listening, and
        # the waiter must still learn of it (every waiter re-reads after a reconnect).
        await send(b, alice, bob.user_id, "during the outage")
        page, elapsed = await polling
        assert [e["data"]["body"] for e in page["entries"]] == ["during the outage"]
        assert elapsed < LONG / 2
        # Later sends still wake later long-polls across processes.
        for i in range(3):
            polling = asyncio.create_task(poll(a, bob, since=page["next_since"]))
            await until_waiting(a, 1)
            await send(b, alice, bob.user_id, f"after {i}")
            page, elapsed = await polling
            assert [e["data"]["body"] for e in page["entries"]] == [f"after {i}"]
            assert elapsed < LONG / 2
        metrics = (await a.get("/metrics")).text
        assert "msgsync_listener_up 1" in metrics
        assert "msgsync_listener_reconnects_total 1" in metrics


async def test_sigterm_answers_waiting_long_polls(postgresql_url: str) -> None:
    with running_server(postgresql_url) as server:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=server.url, limits=limits) as client:
            devices = [await register(client) for _ in range(5)]
            polls = [asyncio.create_task(poll(client, d, since=0)) for d in devices]
            await until_waiting(client, 5)
            server.process.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*polls)
            assert all(page["entries"] == [] for page, _ in results)
            assert all(elapsed < LONG / 2 for _, elapsed in results)
            # uvicorn re-raises the signal once shut down cleanly: "terminated by SIGTERM".
            assert await asyncio.to_thread(server.process.wait, 15) in (0, -signal.SIGTERM)


def test_sqlite_refuses_several_workers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--workers", "2"],
        env={"MSGSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "SQLite serves one process only" in result.stderr


async def test_a_recall_and_a_read_receipt_wake_long_polls(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice, bob = await register(client), await register(client)
        sent = (await send(client, alice, bob.user_id, "oops"))["message"]
        polling = asyncio.create_task(poll(client, bob, since=1))
        await until_waiting(client, 1)
        recalled = await client.post(f"/messages/{sent['id']}/recall", headers=alice.headers)
        assert recalled.status_code == 200, recalled.text
        page, elapsed = await polling
        assert [(e["kind"], e["data"]["message_id"]) for e in page["entries"]] == [
            ("recall", sent["id"])
        ]
        assert elapsed < LONG / 2

        # alice's long-poll learns that bob read up to the message.
        polling = asyncio.create_task(poll(client, alice, since=2))
        await until_waiting(client, 1)
        read = await client.post(
            f"/conversations/{alice.user_id}/read",
            json={"up_to_message_id": sent["id"]},
            headers=bob.headers,
        )
        assert read.status_code == 200, read.text
        page, elapsed = await polling
        assert [e["kind"] for e in page["entries"]] == ["read"]
        assert page["entries"][0]["data"]["reader"] == bob.user_id
        assert elapsed < LONG / 2


async def test_a_logout_in_one_process_revokes_the_token_in_another(fresh_pg: str) -> None:
    async with two_processes(fresh_pg) as (a, b):
        alice = await register(a)
        # Both processes have now seen (and cached) the token.
        assert (await a.get("/devices", headers=alice.headers)).status_code == 200
        assert (await b.get("/devices", headers=alice.headers)).status_code == 200
        assert (await a.post("/logout", headers=alice.headers)).status_code == 204
        assert (await a.get("/devices", headers=alice.headers)).status_code == 401
        for _ in range(100):  # the revocation crosses over within a NOTIFY round
            if (await b.get("/devices", headers=alice.headers)).status_code == 401:
                break
            await asyncio.sleep(0.05)
        response = await b.get("/sync", headers=alice.headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"


async def test_a_logout_ends_the_devices_waiting_long_poll(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=LONG + 10) as client:
        alice = await register(client)
        laptop = await login(client, alice.user_id, name="laptop")
        waiting = asyncio.create_task(
            client.get("/sync", params={"since": 0, "timeout": LONG}, headers=alice.headers)
        )
        await until_waiting(client, 1)
        started = time.monotonic()
        assert (await client.post("/logout", headers=alice.headers)).status_code == 204
        response = await waiting
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert time.monotonic() - started < LONG / 2
        # The user's other device is untouched.
        assert (await client.get("/devices", headers=laptop.headers)).status_code == 200


async def test_a_long_poll_on_a_token_the_process_has_not_seen_waits_as_any_other(
    fresh_pg: str,
) -> None:
    """A process that has not seen a token yet reads it from the database before serving
    the long-poll: the wait that follows is woken by a send, freed when the client hangs
    up, counts towards the device's bound and is answered 401 on logout, as on a token
    it knows."""
    async with two_processes(fresh_pg) as (a, b):
        alice, bob = await register(a), await register(a)
        # Woken by a send from the other process.
        polling = asyncio.create_task(poll(b, bob, since=0))
        await until_waiting(b, 1)
        sent = await send(a, alice, bob.user_id, "first sight")
        page, elapsed = await polling
        assert [e["data"] for e in page["entries"]] == [sent["message"]]
        assert elapsed < LONG / 2
        await until_waiting(b, 0)

        # Freed when the client hangs up.
        tablet = await login(a, bob.user_id, "tablet")
        leaving = asyncio.create_task(poll(b, tablet, since=page["next_since"]))
        await until_waiting(b, 1)
        leaving.cancel()
        await asyncio.gather(leaving, return_exceptions=True)
        await until_waiting(b, 0)

        # Counted with the device's later long-polls: the eleventh ends it, as a timeout.
        laptop = await login(a, bob.user_id, "laptop")
        since = page["next_since"]
        oldest = asyncio.create_task(poll(b, laptop, since=since))
        await until_waiting(b, 1)
        newer = [asyncio.create_task(poll(b, laptop, since=since)) for _ in range(10)]
        ended, elapsed = await asyncio.wait_for(oldest, LONG / 2)
        assert (ended["entries"], ended["next_since"]) == ([], since)
        await until_waiting(b, 10)

        # Answered 401 when the device logs out in the other process.
        watch = await login(a, bob.user_id, "watch")
        waiting_watch = asyncio.create_task(
            b.get("/sync", params={"since": since, "timeout": LONG}, headers=watch.headers)
        )
        await until_waiting(b, 11)
        assert (await a.post("/logout", headers=watch.headers)).status_code == 204
        response = await asyncio.wait_for(waiting_watch, LONG / 2)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        for task in newer:
            task.cancel()
        await asyncio.gather(*newer, return_exceptions=True)
        await until_waiting(b, 0)
