"""After the database comes back, clients see no failure: the pooled connections that the
restart ended are dropped when the listener sees its own connection end, not one request
per pool per worker later. While it is unreachable, every answer comes fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.notifier import PgNotifier
from tests.conftest import make_settings, over_backends
from tests.factories import PASSWORD, register, send, set_token_cache, sync_all
from tests.proxy import stalling_proxy
from tests.server import running_server
from tests.test_accounts import assert_problem


async def _listener_back(app: FastAPI, reconnects: int) -> None:
    notifier = app.state.notifier
    assert isinstance(notifier, PgNotifier)
    for _ in range(1000):  # 20 s at most
        if notifier.stats["listener_reconnects"] > reconnects and notifier.healthy:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the listener did not reconnect")


async def test_no_request_fails_once_the_database_is_back(fresh_pg: str) -> None:
    app = create_app(make_settings(fresh_pg))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:
            alice, bob = await register(c), await register(c)
            await set_token_cache(app, c, alice, cached=True)
            # Both pools hold connections: the statement pool from start-up, the
            # transaction pool from the logins.
            for restart in range(2):
                before = app.state.notifier.stats["listener_reconnects"]
                # What a restart or failover does to every connection.
                assert over_backends(fresh_pg, "count(pg_terminate_backend(pid))") > 0
                await _listener_back(app, before)
                statuses = []
                for i in range(5):
                    for response in await asyncio.gather(
                        c.post(
                            "/messages",
                            json={"to": bob.user_id, "body": f"{restart}.{i}"},
                            headers=alice.headers,
                        ),
                        c.get("/sync", params={"since": 0}, headers=bob.headers),
                        c.post("/login", json={"user_id": bob.user_id, "password": PASSWORD}),
                        c.get("/conversations", headers=bob.headers),
                        c.get("/devices", headers=alice.headers),
                    ):
                        statuses.append(response.status_code)
                assert all(200 <= s < 300 for s in statuses), statuses


# MSGSYNC_DATABASE_WAIT_SECONDS for the test below (the default).
WAIT = 2.0


async def _timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


@pytest.mark.server
async def test_an_unreachable_database_is_answered_fast_and_left_at_once(fresh_pg: str) -> None:
    """The database unreachable the way that hangs clients (connections accepted and never
    answered, as by a host that died or a stalled server): every request is answered 503
    within MSGSYNC_DATABASE_WAIT_SECONDS (plus a margin for the test's own overhead),
    /readyz within a second, and once the database answers again the listener, /readyz and
    sends are back within about a second. The bounds are the contract's, with margin."""
    environment = {"MSGSYNC_DATABASE_WAIT_SECONDS": str(WAIT), "MSGSYNC_DB_POOL_SIZE": "3"}
    with stalling_proxy(fresh_pg) as (proxy, url), running_server(url, env=environment) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            alice, bob = await register(client), await register(client)
            await send(client, alice, bob.user_id, "before")
            proxy.blackhole()

            def one(i: int) -> Awaitable[httpx.Response]:
                return client.post(
                    "/messages",
                    json={"to": bob.user_id, "body": f"during {i}", "client_msg_id": f"d{i}"},
                    headers=alice.headers,
                )

            # More sends at once than the pool has connections: some wait for one.
            answers = await asyncio.gather(
                *(_timed(one(i)) for i in range(10)), _timed(client.get("/readyz"))
            )
            for response, elapsed in answers:
                assert_problem(response, 503, "database_unavailable")
                assert response.headers["retry-after"] == "1"
                assert elapsed < WAIT + 2, (response.request.url, elapsed)
            readyz, elapsed = await _timed(client.get("/readyz"))
            assert_problem(readyz, 503, "database_unavailable")
            assert elapsed < 1.5
            await asyncio.sleep(3)  # the listener has retried a few times meanwhile

            proxy.resume()
            resumed = time.monotonic()
            while (await client.get("/readyz", timeout=2)).status_code != 200:
                assert time.monotonic() - resumed < 3, "not ready again"
                await asyncio.sleep(0.05)
            ready_after = time.monotonic() - resumed
            response = await one(0)
            assert response.status_code == 201, response.text
            assert ready_after < 2, ready_after
            assert time.monotonic() - resumed < 3
            # A client retries what failed: nothing lost, nothing doubled.
            for i in range(1, 10):
                await send(client, alice, bob.user_id, f"during {i}", client_msg_id=f"d{i}")
            bodies = [e["data"]["body"] for e in await sync_all(client, bob)]
            assert bodies[0] == "before"
            assert sorted(bodies[1:]) == sorted(f"during {i}" for i in range(10))
