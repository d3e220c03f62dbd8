"""After the database comes back, clients see no failure: the pooled connections that the
restart ended are dropped when the listener sees its own connection end, not one request
per pool per worker later."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from app.main import create_app
from app.notifier import PgNotifier
from tests.conftest import make_settings, over_backends
from tests.factories import PASSWORD, register, set_token_cache


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
