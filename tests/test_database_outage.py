"""When the database fails under a request: problem details, never a bare 500, and recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from app.inbox import sync, wait
from app.main import create_app
from app.store import open_database
from tests.conftest import make_settings, over_backends
from tests.factories import register, send, set_token_cache, sync_all
from tests.server import running_server
from tests.test_accounts import assert_problem


@pytest.fixture
async def lenient_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets the answer of a failed request instead of the exception (the
    framework re-raises after answering, for the server's log)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:
        yield c


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (psycopg.OperationalError("terminating connection"), 503, "database_unavailable"),
        (RuntimeError("a bug"), 500, "internal_error"),
    ],
    ids=["database", "bug"],
)
async def test_an_unexpected_failure_is_a_problem_on_either_path(
    app: FastAPI,
    lenient_client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    status: int,
    code: str,
) -> None:
    alice, bob = await register(lenient_client), await register(lenient_client)

    async def failing(*args: object) -> None:
        raise failure

    monkeypatch.setattr(sync, "send_message", failing)
    for cached in (False, True):
        await set_token_cache(app, lenient_client, alice, cached)
        response = await lenient_client.post(
            "/messages", json={"to": bob.user_id, "body": "hi"}, headers=alice.headers
        )
        assert_problem(response, status, code)
        assert "a bug" not in response.text  # the exception goes to the log only
        if status == 503:
            assert response.headers["retry-after"] == "1"


@pytest.mark.slow
async def test_sends_after_the_database_dropped_every_connection(fresh_pg: str) -> None:
    """A database restart or failover, as PostgreSQL ends every connection: requests on a
    dropped connection answer 503 database_unavailable, and the service recovers by itself."""
    with running_server(fresh_pg) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            alice, bob = await register(client), await register(client)
            await asyncio.gather(*(send(client, alice, bob.user_id, f"m{i}") for i in range(20)))
            assert over_backends(fresh_pg, "count(pg_terminate_backend(pid))") > 0
            answers = []
            for i in range(30):
                response = await client.post(
                    "/messages",
                    json={"to": bob.user_id, "body": f"after {i}", "client_msg_id": f"a{i}"},
                    headers=alice.headers,
                )
                if response.status_code == 503:
                    assert_problem(response, 503, "database_unavailable")
                else:
                    assert response.status_code == 201, response.text
                answers.append(response.status_code)
            # A request that finds the connections dropped may fail (before the listener saw
            # its own connection end and dropped the pools); the rest go through.
            assert answers[-10:] == [201] * 10
            # A client retries what failed: nothing is lost, nothing doubled.
            for i, status in enumerate(answers):
                if status == 503:
                    await send(client, alice, bob.user_id, f"after {i}", client_msg_id=f"a{i}")
            bodies = [e["data"]["body"] for e in await sync_all(client, bob)]
            assert sorted(bodies[:20]) == sorted(f"m{i}" for i in range(20))
            assert sorted(bodies[20:]) == sorted(f"after {i}" for i in range(30))


def _read_only(url: str, on: bool) -> None:
    """Drain url's database read-only for new sessions, as a failover drains the primary it
    demotes (pg_auto_failover sets default_transaction_read_only), or make it writable."""
    name = url.rpartition("/")[2]
    setting = (
        "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
    )
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("SET default_transaction_read_only = off")  # this session writes
        admin.execute(f'ALTER DATABASE "{name}" {setting}')


@pytest.mark.slow
async def test_a_primary_drained_read_only_refuses_writes_with_503_and_serves_reads(
    fresh_pg: str,
) -> None:
    """A failover drains the old primary read-only before it stops: a send then is refused
    (503 database_unavailable with Retry-After, never a 500, nothing stored), reads go on,
    and the client's retry is stored once when a writable primary answers."""
    with running_server(fresh_pg) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            alice, bob = await register(client), await register(client)
            await send(client, alice, bob.user_id, "before")
            _read_only(fresh_pg, True)
            try:
                # The connections made before stay writable: end them, as the drain does.
                assert over_backends(fresh_pg, "count(pg_terminate_backend(pid))") > 0
                for i in range(6):
                    response = await client.post(
                        "/messages",
                        json={"to": bob.user_id, "body": f"m{i}", "client_msg_id": f"c{i}"},
                        headers=alice.headers,
                    )
                    assert_problem(response, 503, "database_unavailable")
                    assert response.headers["retry-after"] == "1"
                bodies = [e["data"]["body"] for e in await sync_all(client, bob)]
                assert bodies == ["before"]
            finally:
                _read_only(fresh_pg, False)
            for i in range(6):
                for _ in range(3):  # a pooled read-only session fails once, then is dropped
                    response = await client.post(
                        "/messages",
                        json={"to": bob.user_id, "body": f"m{i}", "client_msg_id": f"c{i}"},
                        headers=alice.headers,
                    )
                    if response.status_code != 503:
                        break
                assert response.status_code == 201, response.text
            bodies = [e["data"]["body"] for e in await sync_all(client, bob)]
            assert bodies == ["before", *(f"m{i}" for i in range(6))]


@pytest.mark.parametrize("timeout", [0, 5])
async def test_a_sync_that_fails_is_a_problem_long_poll_or_not(
    lenient_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, timeout: int
) -> None:
    bob = await register(lenient_client)

    async def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    # The one sync path (app.inbox.wait) reads through the name it imported.
    monkeypatch.setattr(wait, "fetch_since", failing)
    response = await lenient_client.get(
        "/sync", params={"since": 0, "timeout": timeout}, headers=bob.headers
    )
    assert_problem(response, 500, "internal_error")


async def test_the_driver_path_drops_the_whole_pool_when_the_database_went_away(
    fresh_pg: str,
) -> None:
    """The hot statements run on the bare driver connection, where SQLAlchemy does not see
    a disconnect; they must still start afresh, not fail once per pooled connection."""
    db = open_database(make_settings(fresh_pg))
    try:

        async def one() -> None:
            async with db.driver() as driver:
                await driver.execute("SELECT pg_sleep(0.05)")

        await asyncio.gather(*(one() for _ in range(8)))  # eight connections in the pool
        assert over_backends(fresh_pg, "count(pg_terminate_backend(pid))") >= 8
        failures = 0
        for _ in range(8):
            try:
                async with db.driver() as driver:
                    await driver.execute("SELECT 1")
            except psycopg.OperationalError:
                failures += 1
        assert failures == 1
    finally:
        await db.dispose()


async def test_the_pool_is_open_before_the_first_request(fresh_pg: str) -> None:
    for prewarm in (False, True):
        app = create_app(make_settings(fresh_pg, db_pool_size=6, db_pool_prewarm=prewarm))
        async with app.router.lifespan_context(app):
            # Not counting the notifier's listener and publisher.
            statement = over_backends(
                fresh_pg, "count(*)", "application_name NOT LIKE 'msgsync-%%'"
            )
            assert statement == (6 if prewarm else 0)


async def test_opening_the_pool_against_a_database_that_is_down_does_not_raise(
    pg_admin_url: str,
) -> None:
    missing = pg_admin_url.rpartition("/")[0] + "/msgsync_no_such_database"
    db = open_database(make_settings(missing, db_pool_size=3))
    try:
        await db.prewarm()  # logged; the service starts and connects when it can
    finally:
        await db.dispose()
