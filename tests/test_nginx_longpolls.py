"""1,000 idle long-polls through nginx (deploy/nginx.conf as shipped) in front of one
msgsync server: every one is held, those sent a message are woken with it while the others
still wait, and none is answered 502 or 504 by nginx."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI
from tests.factories import Device, devices_in_database, register, send
from tests.server import running_server
from tests.topology import NGINX, running_nginx

pytestmark = pytest.mark.topology

DEVICES = 1000
POLLS_PER_CLIENT = 50


@pytest.fixture
def nginx_url(postgresql_url: str, tmp_path: Path) -> Iterator[str]:
    if not Path(NGINX).exists():
        if IN_CI:
            pytest.fail("the nginx test needs Debian's nginx")
        pytest.skip("the nginx test needs Debian's nginx")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3 * DEVICES + 200:  # this process's sockets, nginx's two per poll, the server's
        pytest.skip(f"{DEVICES} long-polls need an open-file limit above {soft}")
    tmp_path.chmod(0o755)
    # One process, so that its /metrics counts every waiting long-poll.
    with running_server(postgresql_url, workers=1) as server:
        upstream = server.url.removeprefix("http://")
        with running_nginx([upstream], tmp_path) as url:
            yield url


@pytest.fixture
def devices(postgresql_url: str) -> list[Device]:
    return devices_in_database(postgresql_url, DEVICES)


async def _waiting(client: httpx.AsyncClient) -> int:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("msgsync_waiting_long_polls "):
            return int(float(line.split()[1]))
    return 0


async def test_a_thousand_idle_long_polls_through_nginx(
    nginx_url: str, devices: list[Device]
) -> None:
    # The long-polls on clients of their own, a few dozen each: an httpx pool scans every
    # connection it holds at each step of each request, so one pool of 1,000 waiting
    # connections cost more CPU than the server did (and sends through it ran at 6 a second).
    limits = httpx.Limits(max_connections=POLLS_PER_CLIENT, max_keepalive_connections=0)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=nginx_url, timeout=90))
        waiting_clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=nginx_url, timeout=90, limits=limits)
            )
            for _ in range(0, DEVICES, POLLS_PER_CLIENT)
        ]
        gate = asyncio.Semaphore(32)
        sender = await register(client)

        loop = asyncio.get_running_loop()
        began = loop.time()

        async def poll(i: int, device: Device) -> tuple[httpx.Response, float]:
            """The poll's answer and how long it was held."""
            start = loop.time()
            answer = await waiting_clients[i // POLLS_PER_CLIENT].get(
                "/sync", params={"since": 0, "timeout": 60}, headers=device.headers
            )
            return answer, loop.time() - start

        polls = [asyncio.create_task(poll(i, d)) for i, d in enumerate(devices)]
        for _ in range(600):  # every long-poll parked on the server, within a minute
            if await _waiting(client) >= DEVICES:
                break
            assert not any(p.done() for p in polls), [p.result() for p in polls if p.done()][:3]
            await asyncio.sleep(0.1)
        assert await _waiting(client) == DEVICES

        async def message(device: Device) -> int:
            async with gate:
                sent = await send(client, sender, device.user_id, f"for {device.user_id}")
                message_id: int = sent["message"]["id"]
                return message_id

        woken, waiting = list(range(0, DEVICES, 2)), list(range(1, DEVICES, 2))
        sent = await asyncio.gather(*(message(devices[i]) for i in woken))
        ids = dict(zip(woken, sent, strict=True))
        async with asyncio.timeout(45):  # well inside their 60 s: woken, not timed out
            await asyncio.gather(*(polls[i] for i in woken))
        early = [polls[i].result()[0] for i in waiting if polls[i].done()]
        # The others still wait.
        assert not early, (len(early), loop.time() - began, early[0].status_code, early[0].text)

        sent = await asyncio.gather(*(message(devices[i]) for i in waiting))
        ids |= dict(zip(waiting, sent, strict=True))
        async with asyncio.timeout(45):
            answers = await asyncio.gather(*polls)
        statuses = sorted({a.status_code for a, _ in answers})
        assert statuses == [200], statuses  # no 502 or 504 from nginx
        for i, (answer, held) in enumerate(answers):
            entries = answer.json()["entries"]
            if not entries:
                # On a loaded machine a poll's 60 s can run out as its message arrives: it
                # answers empty (never before its time), and the next sync has the message.
                assert held >= 59, (i, held)
                again = await client.get("/sync", params={"since": 0}, headers=devices[i].headers)
                entries = again.json()["entries"]
            assert [(e["version"], e["data"]["id"]) for e in entries] == [(1, ids[i])]
            assert entries[0]["data"]["body"] == f"for {devices[i].user_id}"
