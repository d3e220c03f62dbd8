"""/readyz: 503 with Retry-After, and no driver internals, while the database or the
cross-process listener is down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.notifier import PgNotifier
from tests.conftest import make_settings
from tests.test_accounts import assert_problem


@pytest.fixture
async def pg_app(fresh_pg: str) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(fresh_pg))
    async with application.router.lifespan_context(application):
        yield application


def _assert_not_ready(response: httpx.Response, database_url: str) -> None:
    assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "1"
    name = database_url.rpartition("/")[2]
    for internal in ("127.0.0.1", "5432", name, "SELECT", "psycopg", "connection"):
        assert internal not in response.text


async def test_ready_then_not_while_the_listener_is_down(pg_app: FastAPI, fresh_pg: str) -> None:
    transport = httpx.ASGITransport(app=pg_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as client:
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        notifier = pg_app.state.notifier
        assert isinstance(notifier, PgNotifier)
        notifier.listening.clear()  # what the listener task does when its connection drops
        response = await client.get("/readyz")
        _assert_not_ready(response, fresh_pg)
        assert "listener" in response.json()["detail"]


async def test_not_ready_when_the_database_is_gone(
    pg_app: FastAPI, fresh_pg: str, pg_admin_url: str
) -> None:
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{fresh_pg.rpartition("/")[2]}" WITH (FORCE)')
    transport = httpx.ASGITransport(app=pg_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as client:
        _assert_not_ready(await client.get("/readyz"), fresh_pg)
