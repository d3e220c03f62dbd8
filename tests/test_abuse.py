"""Failures under a real server: one condition answers one code, and no failure costs the
client its keep-alive connection."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Literal

import httpx
import psycopg
from argon2 import PasswordHasher

from app.accounts.auth import Passwords
from app.errors import AppError
from tests.conftest import PG_ADMIN_URL, make_settings, over_backends
from tests.factories import PASSWORD, login, new_user_id, register, send
from tests.server import running_server
from tests.test_accounts import assert_problem


@contextmanager
def database_down(url: str) -> Iterator[None]:
    """A real outage of url's database: every connection ended and no new one accepted,
    until the block ends."""
    name = url.rpartition("/")[2]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            over_backends_admin(admin, name)
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def over_backends_admin(admin: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
    )


async def test_an_ack_during_an_outage_is_database_unavailable(fresh_pg: str) -> None:
    """The same answer as every other endpoint: on the lean path (token cached, JSON body),
    through the framework with the token cached (a +json type, which only the framework
    takes), and with a token the server has not seen yet (its look-up meets the outage)."""
    with running_server(fresh_pg) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            alice = await register(client)
            await send(client, alice, alice.user_id, "one")
            tablet = await login(client, alice.user_id, "tablet")
            # Cache the token in the worker, so that authenticating needs no database and
            # the ack itself meets the outage.
            assert (await client.get("/devices", headers=alice.headers)).status_code == 200
            json = {"content-type": "application/json"}
            ways = {
                "lean path": {**alice.headers, **json},
                "framework": {**alice.headers, "content-type": "application/merge-patch+json"},
                "token not cached": {**tablet.headers, **json},
            }
            with database_down(fresh_pg):
                for way, headers in ways.items():
                    response = await client.post("/ack", content=b'{"version": 1}', headers=headers)
                    assert_problem(response, 503, "database_unavailable")
                    assert response.headers["retry-after"] == "1", way
                    assert "Error" not in response.json()["detail"], way
            for way, headers in ways.items():
                response = await client.post("/ack", content=b'{"version": 1}', headers=headers)
                assert response.status_code == 200, (way, response.text)
                assert response.json()["acked_version"] == 1
            assert over_backends(fresh_pg, "count(*)") > 0


async def test_password_hashes_run_a_few_at_a_time_and_the_queue_is_bounded() -> None:
    """Each Argon2 hash holds its memory (64 MiB in production) while it runs: however many
    logins arrive, at most `password_hash_concurrency` run and `password_hash_queue` wait;
    the rest are refused at once with 503 server_busy and Retry-After."""
    passwords = Passwords(
        make_settings("sqlite://", password_hash_concurrency=2, password_hash_queue=3)
    )
    stored = await passwords.hash("right password")
    running = most = 0
    lock = threading.Lock()
    release = threading.Event()

    class HeldHasher(PasswordHasher):
        """The real hasher, counting the checks that run at once and holding each until the
        test releases them (so that the ones admitted are all running together)."""

        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            try:
                release.wait(timeout=30)
                return super().verify(hash, password)
            finally:
                with lock:
                    running -= 1

    passwords._hasher = HeldHasher(time_cost=1, memory_cost=64, parallelism=1)
    checks = [
        asyncio.ensure_future(passwords.verify(stored, guess))
        for guess in [*(f"guess {i}" for i in range(8)), "right password"]
    ]
    for _ in range(3000):
        if running == 2:
            break
        await asyncio.sleep(0.01)
    # Room for a third to start, were the bound broken.
    await asyncio.sleep(0.2)
    assert running == most == 2
    release.set()
    results = await asyncio.gather(*checks, return_exceptions=True)
    refused = [r for r in results if isinstance(r, AppError)]
    assert results[:5] == [False] * 5  # two ran, three waited their turn
    assert len(refused) == 4
    for error in refused:
        assert (error.status, error.code) == (503, "server_busy")
        assert error.headers["Retry-After"] == "1"
    assert most == 2
    # Once the burst is over, a check runs again.
    assert await passwords.verify(stored, "right password") is True


class OneConnection:
    """One keep-alive HTTP/1.1 connection, which must stay the same one throughout."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.connection.connect()
        self.socket = self.connection.sock

    def request(
        self, method: str, path: str, body: object = None, token: str = ""
    ) -> tuple[int, dict[str, str], dict[str, object]]:
        headers = {"content-type": "application/json"} if body is not None else {}
        if token:
            headers["authorization"] = f"Bearer {token}"
        content = None if body is None else json.dumps(body)
        self.connection.request(method, path, body=content, headers=headers)
        response = self.connection.getresponse()
        answer = (response.status, dict(response.headers.items()), json.loads(response.read()))
        # http.client opens a new connection by itself when the server closed the last one.
        assert self.connection.sock is self.socket, "the server closed the connection"
        return answer

    def close(self) -> None:
        self.connection.close()


def test_an_unexpected_failure_leaves_the_connection_usable(fresh_pg: str) -> None:
    """A real failure that no handler expects (the inbox table gone, as after a botched
    migration) on each path, fast or not: 500 internal_error problem details, and the next
    request on the same keep-alive connection is answered."""
    with running_server(fresh_pg) as server, ExitStack() as stack:
        client = OneConnection(server.url)
        stack.callback(client.close)
        user = new_user_id()
        assert client.request("POST", "/users", {"user_id": user, "password": PASSWORD})[0] == 201
        status, _, body = client.request("POST", "/login", {"user_id": user, "password": PASSWORD})
        assert status == 201
        token = str(body["access_token"])
        assert client.request("GET", "/devices", token=token)[0] == 200  # token now cached
        name = fresh_pg.rpartition("/")[2]
        with psycopg.connect(PG_ADMIN_URL.rpartition("/")[0] + f"/{name}", autocommit=True) as db:
            # A long-poll that waits, then is woken onto the failure.
            waiting = OneConnection(server.url)
            stack.callback(waiting.close)
            woken = stack.enter_context(ThreadPoolExecutor(1)).submit(
                waiting.request, "GET", "/sync?since=0&timeout=30", None, token
            )
            assert client.request("GET", "/devices", token=token)[0] == 200
            db.execute("ALTER TABLE inbox RENAME TO inbox_gone")
            db.execute("SELECT pg_notify('msgsync', %s)", (f"test:w:{user}",))
            failures = {
                "long-poll woken": woken.result(timeout=60),
                "send (lean path)": client.request(
                    "POST", "/messages", {"to": user, "body": "hi"}, token
                ),
                "sync (framework)": client.request("GET", "/sync?since=0", token=token),
                "long-poll": client.request("GET", "/sync?since=0&timeout=5", token=token),
            }
            for way, (status, headers, body) in failures.items():
                assert status == 500, (way, body)
                assert body["code"] == "internal_error", way
                assert headers["content-type"] == "application/problem+json", way
                assert "inbox" not in str(body["detail"]), way  # the cause goes to the log
            # Each connection still serves its next request.
            assert waiting.request("GET", "/healthz")[0] == 200
            db.execute("ALTER TABLE inbox_gone RENAME TO inbox")
        status, _, body = client.request("POST", "/messages", {"to": user, "body": "hi"}, token)
        assert status == 201, body


async def test_password_hashes_run_at_the_lowest_cpu_priority() -> None:
    """A login flood must not take the CPU from the event loop that serves sends: hashes run
    in threads at nice 19, which Argon2's own lane threads inherit."""
    passwords = Passwords(make_settings("sqlite://"))
    priorities: list[int] = []

    class Observed(PasswordHasher):
        def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
            priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return super().hash(password, salt=salt)

    passwords._hasher = Observed(time_cost=1, memory_cost=64, parallelism=1)
    await passwords.hash("a password")
    assert priorities == [19]
