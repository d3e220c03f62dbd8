"""Login and registration throttling: per account and per client address, in the database so
that every worker counts against the same limits."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from tests.conftest import make_settings
from tests.factories import PASSWORD, new_user_id
from tests.server import running_server
from tests.test_accounts import assert_problem

WINDOW = 600
LIMITS = {
    "login_attempts_per_account": 3,
    "login_attempts_per_address": 6,
    "registrations_per_address": 2,
    "throttle_window_seconds": WINDOW,
}


@pytest.fixture
async def throttled_app(database_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(database_url, **LIMITS))
    async with application.router.lifespan_context(application):
        yield application


@asynccontextmanager
async def client_at(app: FastAPI, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:
        yield c


def assert_throttled(response: httpx.Response) -> None:
    assert_problem(response, 429, "too_many_attempts")
    assert 1 <= int(response.headers["retry-after"]) <= WINDOW


async def new_account(client: httpx.AsyncClient) -> str:
    user_id = new_user_id("t")
    response = await client.post("/users", json={"user_id": user_id, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return user_id


async def attempt(client: httpx.AsyncClient, user_id: str, password: str) -> httpx.Response:
    return await client.post("/login", json={"user_id": user_id, "password": password})


def unique_address() -> str:
    """A documentation-range address of its own (the shared database keeps counters)."""
    n = int.from_bytes(os.urandom(3))
    return f"203.{n >> 16}.{(n >> 8) & 255}.{n & 255}"


async def test_wrong_passwords_lock_the_account_until_the_window_ends(
    throttled_app: FastAPI,
) -> None:
    async with client_at(throttled_app, unique_address()) as setup:
        user_id = await new_account(setup)
    # From three addresses: the account's limit holds whoever guesses.
    for i in range(3):
        async with client_at(throttled_app, unique_address()) as client:
            assert_problem(await attempt(client, user_id, f"wrong {i}"), 401, "bad_credentials")
    async with client_at(throttled_app, unique_address()) as client:
        assert_throttled(await attempt(client, user_id, "wrong again"))
        # Even the right password: the guesser must not learn that it was right.
        assert_throttled(await attempt(client, user_id, PASSWORD))
        # Other accounts are not affected.
        async with client_at(throttled_app, unique_address()) as other:
            someone = await new_account(other)
        assert (await attempt(client, someone, PASSWORD)).status_code == 201


async def test_a_successful_login_resets_the_account(throttled_app: FastAPI) -> None:
    async with client_at(throttled_app, unique_address()) as client:
        user_id = await new_account(client)
        for _ in range(2):
            assert (await attempt(client, user_id, "mistyped")).status_code == 401
        assert (await attempt(client, user_id, PASSWORD)).status_code == 201
        for _ in range(2):
            assert (await attempt(client, user_id, "mistyped")).status_code == 401
        assert (await attempt(client, user_id, PASSWORD)).status_code == 201


async def test_one_address_guessing_many_accounts_is_throttled(throttled_app: FastAPI) -> None:
    async with client_at(throttled_app, unique_address()) as setup:
        accounts = [await new_account(setup) for _ in range(2)]
    address = unique_address()
    async with client_at(throttled_app, address) as guesser:
        for i in range(6):
            # Unknown users too: they cost a hash like any other.
            target = accounts[i % 2] if i < 4 else new_user_id("nobody")
            assert_problem(await attempt(guesser, target, "guess"), 401, "bad_credentials")
        assert_throttled(await attempt(guesser, accounts[0], PASSWORD))
    async with client_at(throttled_app, unique_address()) as elsewhere:
        assert (await attempt(elsewhere, accounts[0], PASSWORD)).status_code == 201


async def test_registrations_are_throttled_per_address(throttled_app: FastAPI) -> None:
    async with client_at(throttled_app, unique_address()) as client:
        for _ in range(2):
            await new_account(client)
        response = await client.post(
            "/users", json={"user_id": new_user_id("t"), "password": PASSWORD}
        )
        assert_throttled(response)
    async with client_at(throttled_app, unique_address()) as elsewhere:
        await new_account(elsewhere)


# --- across the workers of a real server ---------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _worker_of(connection: http.client.HTTPConnection, workers: list[int]) -> int | None:
    """The worker process that accepted this client connection (from /proc)."""
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    server_port = connection.sock.getpeername()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
        ):
            inode = fields[9]
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def _post(connection: http.client.HTTPConnection, path: str, body: object) -> tuple[int, str]:
    connection.request(
        "POST", path, body=json.dumps(body), headers={"content-type": "application/json"}
    )
    response = connection.getresponse()
    return response.status, response.read().decode()


@contextmanager
def one_connection_per_worker(url: str, pid: int) -> Iterator[list[http.client.HTTPConnection]]:
    """A keep-alive connection to each of two workers (connections are opened until both
    workers have accepted one)."""
    host, port = url.removeprefix("http://").split(":")
    workers = _children(pid)
    # `msgsync serve --workers 2`: the supervisor's children, the two workers (and maybe
    # the resource tracker, which accepts nothing).
    assert len(workers) >= 2
    opened: list[http.client.HTTPConnection] = []
    by_worker: dict[int, http.client.HTTPConnection] = {}
    try:
        for _ in range(200):
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            opened.append(connection)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            worker = _worker_of(connection, workers)
            if worker is not None:
                by_worker.setdefault(worker, connection)
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "both workers should have accepted a connection"
        yield list(by_worker.values())
    finally:
        for connection in opened:
            connection.close()


@pytest.mark.slow
def test_the_limits_hold_across_workers(fresh_pg: str) -> None:
    env = {f"MSGSYNC_{k.upper()}": str(v) for k, v in LIMITS.items()}
    with (
        running_server(fresh_pg, workers=2, env=env) as server,
        one_connection_per_worker(server.url, server.process.pid) as (first, second),
    ):
        user_id = new_user_id("t")
        status, text = _post(first, "/users", {"user_id": user_id, "password": PASSWORD})
        assert status == 201, text
        # Three wrong guesses, spread over both workers: the account's limit.
        for connection in (first, second, first):
            status, text = _post(connection, "/login", {"user_id": user_id, "password": "x"})
            assert status == 401, text
        # A count kept per process would still let the second worker take two more.
        for connection in (second, first):
            status, text = _post(connection, "/login", {"user_id": user_id, "password": "x"})
            assert status == 429, text
            assert json.loads(text)["code"] == "too_many_attempts"
