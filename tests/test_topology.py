"""The reference deployment on one machine (tests/topology.py): two hosts (network
namespaces) x 2 workers behind nginx (deploy/nginx.conf), PgBouncer in transaction mode, a
primary and a streaming replica of the test's own. Over it: crossing sends with syncing
devices and a retention run (0 lost, 0 duplicated, 0 gaps), wake-ups and logout across
hosts, and one host killed."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI
from tests.factories import Device, register, send
from tests.topology import Topology, kill_host, missing_tools, reference_topology

pytestmark = pytest.mark.topology


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    missing = missing_tools()
    if missing:
        if IN_CI:
            pytest.fail(f"the topology test needs {', '.join(missing)}")
        pytest.skip(f"the topology test needs {', '.join(missing)}")
    workdir = tmp_path_factory.mktemp("topology")
    workdir.chmod(0o755)
    with reference_topology(workdir) as built:
        yield built


async def _device_loop(
    client: httpx.AsyncClient, device: Device, seen: list[dict[str, Any]], stop: asyncio.Event
) -> None:
    """A device syncing as clients do: long-poll from its cursor, apply, go on."""
    since = 0
    while not stop.is_set():
        response = await client.get(
            "/sync", params={"since": since, "timeout": 1}, headers=device.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(page["entries"])
        since = page["next_since"]
    while True:  # caught up only when a page is empty: the primary answers those
        response = await client.get("/sync", params={"since": since}, headers=device.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["entries"]:
            return
        seen.extend(page["entries"])
        since = page["next_since"]


async def _retention(topology: Topology) -> None:
    env = {
        **os.environ,
        "MSGSYNC_DATABASE_URL": topology.statements,
        "MSGSYNC_DATABASE_SESSION_URL": topology.session,
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "app.cli", "retention", "--json", "--max-entries", "5"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert b'"already_running": false' in out


async def test_a_storm_with_retention_loses_nothing(topology: Topology) -> None:
    async with httpx.AsyncClient(base_url=topology.url, timeout=90) as client:
        users = [await register(client) for _ in range(6)]
        devices = {u.user_id: [u, await _second_device(client, u)] for u in users}
        seen: dict[str, list[dict[str, Any]]] = {
            d.device_id: [] for ds in devices.values() for d in ds
        }
        stop = asyncio.Event()
        syncing = [
            asyncio.create_task(_device_loop(client, d, seen[d.device_id], stop))
            for ds in devices.values()
            for d in ds
        ]
        expected: dict[str, set[int]] = {u.user_id: set() for u in users}

        async def sender(user: Device, rng: random.Random) -> None:
            for i in range(15):
                peer = rng.choice([u for u in users if u is not user])
                sent = await send(client, user, peer.user_id, f"{i}", client_msg_id=f"c{i}")
                expected[user.user_id].add(sent["message"]["id"])
                expected[peer.user_id].add(sent["message"]["id"])

        senders = [sender(u, random.Random(n)) for n, u in enumerate(users)]
        await asyncio.gather(*senders[:3])
        await asyncio.gather(*senders[3:], _retention(topology))
        stop.set()
        await asyncio.gather(*syncing)
        for user_id, user_devices in devices.items():
            for device in user_devices:
                entries = seen[device.device_id]
                versions = [e["version"] for e in entries]
                ids = [e["data"]["id"] for e in entries]
                assert versions == list(range(1, len(versions) + 1))  # no gap, no duplicate
                assert sorted(ids) == sorted(expected[user_id])  # nothing lost or doubled


async def _second_device(client: httpx.AsyncClient, user: Device) -> Device:
    from tests.factories import login

    return await login(client, user.user_id, "laptop")


async def test_wakeups_and_logout_cross_hosts(topology: Topology) -> None:
    a, b = topology.hosts
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=90) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=90) as on_b,
    ):
        alice, bob = await register(on_a), await register(on_b)
        poll = asyncio.create_task(
            on_a.get("/sync", params={"since": 0, "timeout": 60}, headers=alice.headers)
        )
        await asyncio.sleep(0.5)  # the long-poll waits (a wake-up only makes it re-read)
        await send(on_b, bob, alice.user_id, "across")
        async with asyncio.timeout(30):  # well inside its 60 s: woken, not timed out
            page = (await poll).json()
        assert [e["data"]["body"] for e in page["entries"]] == ["across"]

        for _ in range(10):  # alice's token in host B's workers' caches
            assert (await on_b.get("/devices", headers=alice.headers)).status_code == 200
        assert (await on_a.post("/logout", headers=alice.headers)).status_code == 204
        for _ in itertools.count():  # one NOTIFY round, far less than the cache's 60 s
            if (await on_b.get("/devices", headers=alice.headers)).status_code == 401:
                break
            assert _ < 400
            await asyncio.sleep(0.05)


async def test_clients_carry_on_when_one_host_dies(topology: Topology) -> None:
    """A request nginx had already passed to the dying host (on a kept-alive upstream
    connection) may come back 502: nginx does not resend a POST it may have delivered. A
    client retries it as any 5xx, with the same client_msg_id, so nothing is lost or
    doubled; every other request is served by the other host."""
    async with httpx.AsyncClient(base_url=topology.url, timeout=90) as client:
        alice, bob = await register(client), await register(client)
        kill_host(topology.processes[0])
        failed = 0

        async def retried(method: str, url: str, **kwargs: Any) -> httpx.Response:
            nonlocal failed
            for _ in range(3):
                response = await client.request(method, url, **kwargs)
                if response.status_code != 502:
                    return response
                failed += 1
            return response

        for i in range(20):
            response = await retried(
                "POST",
                "/messages",
                json={"to": bob.user_id, "body": f"{i}", "client_msg_id": f"k{i}"},
                headers=alice.headers,
            )
            assert response.status_code in (200, 201), response.text
            response = await retried("GET", "/sync", params={"since": 0}, headers=bob.headers)
            assert response.status_code == 200, response.text
        # A plain sync may read the replica, a moment behind the last send: once it has
        # replayed everything, the page holds every message.
        await asyncio.to_thread(topology.pair.wait_replayed)
        response = await retried("GET", "/sync", params={"since": 0}, headers=bob.headers)
        assert response.status_code == 200, response.text
        bodies = [e["data"]["body"] for e in response.json()["entries"]]
        assert bodies == [str(i) for i in range(20)]  # each once, in order
        # Only what was in flight on the dying host failed, never a request after it.
        assert failed <= 2
