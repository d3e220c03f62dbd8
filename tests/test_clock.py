"""Times come from the database's clock, not the host's: hosts whose clocks disagree still
stamp, judge recalls and cut retention by one clock (PostgreSQL; SQLite is one host)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from app import models, operations, retention, sync
from app.main import create_app
from app.retention import prune
from tests.conftest import make_settings
from tests.factories import register, send, sync_all

SKEW = timedelta(days=9)  # past the recall window and the retention age


@pytest.fixture
async def skewed_app(fresh_pg: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FastAPI]:
    """The service on a host whose clock is nine days fast."""

    def fast_clock() -> datetime:
        return datetime.now(UTC) + SKEW

    for module in (models, sync, operations, retention):
        monkeypatch.setattr(module, "utcnow", fast_clock, raising=False)
    application = create_app(make_settings(fresh_pg))
    async with application.router.lifespan_context(application):
        yield application


async def _database_now(url: str) -> datetime:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("SELECT clock_timestamp()")
        row = await cursor.fetchone()
        assert row is not None
        moment: datetime = row[0]
        return moment


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_a_fast_host_clock_changes_no_time(skewed_app: FastAPI, fresh_pg: str) -> None:
    transport = httpx.ASGITransport(app=skewed_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as client:
        alice, bob = await register(client), await register(client)
        before = await _database_now(fresh_pg)
        sent = await send(client, alice, bob.user_id, "hello")
        after = await _database_now(fresh_pg)
        stamped = _parse(sent["message"]["created_at"])
        assert before <= stamped <= after
        # The stored entry carries the same text as the answer.
        (entry,) = await sync_all(client, bob)
        assert entry["data"]["created_at"] == sent["message"]["created_at"]
        assert before <= _parse(entry["created_at"]) <= after

        # Within the recall window by the database's clock, though not by the host's.
        recalled = await client.post(
            f"/messages/{sent['message']['id']}/recall", headers=alice.headers
        )
        assert recalled.status_code == 200, recalled.text
        assert before <= _parse(recalled.json()["message"]["recalled_at"])

        # Retention's seven days are counted on the database's clock: nothing is old yet.
        report = await prune(skewed_app.state.db, timedelta(days=7), 1000)
        assert report.deleted == 0
        assert len(await sync_all(client, bob)) == 2  # the message and its recall
