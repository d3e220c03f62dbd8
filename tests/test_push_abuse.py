"""Pushers are bounded and gateway URLs are compared as URLs, over a real server on
PostgreSQL and SQLite; a malformed allowlist stops `msgsync serve` with one clear message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.factories import Device, login, register
from tests.server import Server, running_server
from tests.test_accounts import assert_problem

GATEWAY = "https://push.example.test/_matrix/push/v1/notify"
ALLOWLIST = f"http://allowed.host,{GATEWAY}"
PER_USER = 7


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    env = {
        "MSGSYNC_PUSH_GATEWAYS": ALLOWLIST,
        # These tests are about the registry: no push falls due while they run.
        "MSGSYNC_PUSH_DELAY_SECONDS": "3600",
        "MSGSYNC_MAX_PUSHERS_PER_USER": str(PER_USER),
    }
    workers = 2 if database_url.startswith("postgresql") else 1
    with running_server(database_url, workers=workers, env=env) as running:
        yield running


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        yield c


def pusher(**overrides: Any) -> dict[str, Any]:
    body = {"app_id": "dev.msgsync.ios", "pushkey": uuid.uuid4().hex, "gateway_url": GATEWAY}
    return body | overrides


async def add(client: httpx.AsyncClient, device: Device, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/pushers", json=body, headers=device.headers)


async def listed(client: httpx.AsyncClient, device: Device) -> list[dict[str, Any]]:
    response = await client.get("/pushers", headers=device.headers)
    assert response.status_code == 200, response.text
    pushers: list[dict[str, Any]] = response.json()["pushers"]
    return pushers


async def test_at_most_five_pushers_per_device(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    bodies = [pusher() for _ in range(5)]
    for body in bodies:
        assert (await add(client, phone, body)).status_code == 201
    assert_problem(await add(client, phone, pusher()), 409, "too_many_pushers")
    # Re-registering one of them is a replace, not one more.
    assert (await add(client, phone, bodies[0] | {"format": "full"})).status_code == 200
    assert len(await listed(client, phone)) == 5
    # Room again once one is removed.
    path = f"/pushers/{bodies[1]['app_id']}/{bodies[1]['pushkey']}"
    assert (await client.delete(path, headers=phone.headers)).status_code == 204
    assert (await add(client, phone, pusher())).status_code == 201
    assert_problem(await add(client, phone, pusher()), 409, "too_many_pushers")


async def test_the_users_devices_together_are_bounded_and_so_is_the_list(
    client: httpx.AsyncClient,
) -> None:
    phone = await register(client)
    tablet = await login(client, phone.user_id, "tablet")
    laptop = await login(client, phone.user_id, "laptop")
    for _ in range(5):
        assert (await add(client, phone, pusher())).status_code == 201
    for _ in range(PER_USER - 5):
        assert (await add(client, tablet, pusher())).status_code == 201
    assert_problem(await add(client, laptop, pusher()), 409, "too_many_pushers")
    assert len(await listed(client, laptop)) == PER_USER


async def test_concurrent_registrations_cannot_pass_the_cap_together(
    client: httpx.AsyncClient,
) -> None:
    """Twenty registrations at once on one device (spread over two workers on PostgreSQL):
    exactly five are created, whatever their order."""
    phone = await register(client)
    answers = await asyncio.gather(*(add(client, phone, pusher()) for _ in range(20)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * 5 + [409] * 15, [a.text for a in answers]
    assert len(await listed(client, phone)) == 5


async def test_concurrent_registrations_by_several_devices_meet_the_users_cap(
    client: httpx.AsyncClient,
) -> None:
    phone = await register(client)
    devices = [phone, *[await login(client, phone.user_id, f"d{i}") for i in range(3)]]
    answers = await asyncio.gather(*(add(client, d, pusher()) for d in devices for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [201] * PER_USER + [409] * (16 - PER_USER)
    assert len(await listed(client, phone)) == PER_USER


async def test_pusher_data_is_at_most_4_kib_of_json(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    # {"x":"..."} is 8 bytes around the string.
    fits = {"x": "a" * (4096 - 8)}
    assert (await add(client, phone, pusher(data=fits))).status_code == 201
    answer = await add(client, phone, pusher(data={"x": "a" * (4096 - 7)}))
    assert_problem(answer, 422, "pusher_data_too_large")
    assert len(await listed(client, phone)) == 1


@pytest.mark.parametrize(
    "url",
    [
        f"{GATEWAY}/../../admin",
        f"{GATEWAY}/%2e%2e/%2e%2e/admin",
        f"{GATEWAY}/%2E%2E/admin",
        f"{GATEWAY}/%2fadmin",
        f"{GATEWAY}/./x",
        f"{GATEWAY}\\..\\admin",
        f"{GATEWAY}#fragment",
        f"{GATEWAY}x",  # not on a segment boundary
        "https://push.example.test:8443/_matrix/push/v1/notify",  # another port
        "http://push.example.test/_matrix/push/v1/notify",  # another scheme
        "https://user@push.example.test/_matrix/push/v1/notify",
        "http://allowed.host@evil/",
        "http://allowed.host.evil.com/",
        "http://allowed.host:8080/",
        "http://allowed.host:0x50/",
        "https://allowed.host/",
        "http://allowed.host /",
    ],
)
async def test_gateway_urls_are_compared_as_urls(client: httpx.AsyncClient, url: str) -> None:
    phone = await register(client)
    assert_problem(await add(client, phone, pusher(gateway_url=url)), 422, "gateway_not_allowed")
    assert await listed(client, phone) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://allowed.host",
        "http://allowed.host/anything/below",
        "http://allowed.host:80/x",  # the default port, made explicit
        "HTTP://Allowed.Host/x",
        f"{GATEWAY}/",
        "https://push.example.test:443/_matrix/push/v1/notify",
        f"{GATEWAY}/per-app",
    ],
)
async def test_urls_within_the_allowlist_are_taken(client: httpx.AsyncClient, url: str) -> None:
    phone = await register(client)
    answer = await add(client, phone, pusher(gateway_url=url))
    assert answer.status_code == 201, answer.text
    assert answer.json()["pusher"]["gateway_url"] == url


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("https://push.example.test/notify/../admin", "'.' or '..' segment"),
        ("https://push.example.test/%2e%2e/admin", "percent-encoded"),
        ("ftp://push.example.test/", "not an http:// or https:// URL"),
        ("https://user@push.example.test/", "user name or password"),
        ("https://push.example.test/notify#x", "fragment"),
        ("https://push.example.test/notify?x=1", "query"),
        ("push.example.test/notify", "not an http:// or https:// URL"),
        ("https://push.example.test:99999/", "not a valid URL"),
        ("http://127.0.0.1:", "port is empty"),
    ],
)
def test_a_malformed_allowlist_stops_the_server_with_one_clear_message(
    entry: str, reason: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0"],
        env={
            **os.environ,
            "MSGSYNC_DATABASE_URL": "sqlite:///:memory:",
            "MSGSYNC_PUSH_GATEWAYS": f"{GATEWAY},{entry}",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("msgsync: invalid setting MSGSYNC_PUSH_GATEWAYS: "), lines
    assert repr(entry) in lines[0], lines
    assert reason in lines[0], lines
