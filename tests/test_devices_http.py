"""Devices under the user's control over real HTTP: two workers on PostgreSQL, one on SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.db.migrations import upgrade_to_head
from app.store import open_database
from tests.conftest import make_settings
from tests.factories import PASSWORD, Device, login, register, send
from tests.server import Server, running_server
from tests.test_accounts import assert_problem
from tests.test_devices import (
    NEW_PASSWORD,
    assert_logged_out,
    change_password,
    device_ids,
    end,
    set_last_seen,
)
from tests.test_longpoll import LONG, two_processes, until_waiting

pytestmark = pytest.mark.server

# Long-polls per device, each on its own connection: with two workers, they land on both.
POLLS = 4


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def served(request: pytest.FixtureRequest) -> Iterator[Server]:
    """Two workers on PostgreSQL; SQLite serves one process only."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    with running_server(url, workers=2 if request.param == "postgresql" else 1) as server:
        yield server


def long_poll(client: httpx.AsyncClient, device: Device) -> asyncio.Task[httpx.Response]:
    """A GET /sync that waits (nothing is newer than since=0), on a connection of its own."""

    async def one() -> httpx.Response:
        async with httpx.AsyncClient(base_url=client.base_url, timeout=LONG + 10) as own:
            return await own.get(
                "/sync", params={"since": 0, "timeout": LONG}, headers=device.headers
            )

    return asyncio.create_task(one())


async def all_unauthorized(polls: list[asyncio.Task[httpx.Response]]) -> None:
    # Each would otherwise wait out its timeout and answer 200 with an empty page.
    for response in await asyncio.gather(*polls):
        assert_problem(response, 401, "unauthorized")


@pytest.mark.slow
async def test_a_device_ended_in_one_process_is_ended_in_the_other(fresh_pg: str) -> None:
    async with two_processes(fresh_pg) as (a, b):
        phone = await register(a)
        laptop = await login(a, phone.user_id, name="laptop")
        for client in (a, b):  # both processes now hold the phone's token in their cache
            assert phone.device_id in await device_ids(client, phone)
        polls = [long_poll(client, phone) for client in (a, b)]
        await until_waiting(a, 1)
        await until_waiting(b, 1)
        assert (await end(b, laptop, phone.device_id)).status_code == 204
        await all_unauthorized(polls)
        for client in (a, b):
            await assert_logged_out(client, phone)
        assert await device_ids(a, laptop) == {laptop.device_id}


async def test_an_ended_devices_long_polls_get_401_in_either_worker(served: Server) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=LONG + 10) as client:
        phone = await register(client)
        laptop = await login(client, phone.user_id, name="laptop")
        polls = [long_poll(client, phone) for _ in range(POLLS)]
        # Each worker answers /metrics for itself only: give the polls time to start waiting.
        # One that has not yet is answered 401 by its first read, as it must be too.
        await asyncio.sleep(1.0)
        assert (await end(client, laptop, phone.device_id)).status_code == 204
        await all_unauthorized(polls)
        for _ in range(POLLS):  # new connections, spread over the workers
            async with httpx.AsyncClient(base_url=served.url) as fresh:
                await assert_logged_out(fresh, phone)
        assert await device_ids(client, laptop) == {laptop.device_id}


async def test_a_password_change_ends_the_others_and_keeps_the_caller(served: Server) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=LONG + 10) as client:
        laptop = await register(client)
        others = [await login(client, laptop.user_id, name=n) for n in ("phone", "tablet")]
        friend = await register(client)
        polls = [long_poll(client, device) for device in others for _ in range(POLLS // 2)]
        callers_poll = long_poll(client, laptop)
        await asyncio.sleep(1.0)
        assert (await change_password(client, laptop)).status_code == 204
        await all_unauthorized(polls)
        for device in others:
            await assert_logged_out(client, device)
        # The caller's long-poll goes on waiting, and gets the next message.
        sent = await send(client, friend, laptop.user_id, "still with you")
        page = await callers_poll
        assert page.status_code == 200, page.text
        assert [e["data"] for e in page.json()["entries"]] == [sent["message"]]
        assert await device_ids(client, laptop) == {laptop.device_id}
        again = await client.post(
            "/login", json={"user_id": laptop.user_id, "password": NEW_PASSWORD}
        )
        assert again.status_code == 201, again.text


@pytest.fixture(params=["postgresql", "sqlite"])
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """A server on a database of its own: the retention job looks at every device."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'msgsync.db'}"
        upgrade_to_head(make_settings(url).database_url)
        workers = 1
    else:
        url = request.getfixturevalue("fresh_pg")
        workers = 2
    with running_server(url, workers=workers) as server:
        yield server, url


async def retention(url: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "retention",
        *args,
        env={**os.environ, "MSGSYNC_DATABASE_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_an_idle_device_gets_401_and_retention_removes_it(
    own_server: tuple[Server, str],
) -> None:
    server, url = own_server
    db = open_database(make_settings(url))
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            phone = await register(client)
            drawer = await login(client, phone.user_id, name="tablet in a drawer")
            # The fixed clock: the tablet was last seen 91 days ago.
            await set_last_seen(db, drawer.device_id, timedelta(days=91))
            for _ in range(POLLS):  # new connections, spread over the workers
                async with httpx.AsyncClient(base_url=server.url) as fresh:
                    await assert_logged_out(fresh, drawer)
            dry: dict[str, Any] = json.loads(await retention(url, "--json", "--dry-run"))
            assert (dry["idle_devices_removed"], dry["device_idle_days"]) == (1, 90)
            assert drawer.device_id in await device_ids(client, phone)
            text = await retention(url)
            assert "removed 1 devices unused for more than 90 days" in text
            assert await device_ids(client, phone) == {phone.device_id}
            relogin = await client.post(
                "/login", json={"user_id": phone.user_id, "password": PASSWORD}
            )
            assert relogin.status_code == 201, relogin.text
    finally:
        await db.dispose()
