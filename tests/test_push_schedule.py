"""When the push worker looks again, on PostgreSQL and SQLite, each in a database of its own
(another test's pushers would fall due in between): at the next due time the database
knows, never sooner than ROUND_GAP, and at most the delay past now (or IDLE_WAIT_MAX) when
nothing is due."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from app.config import Settings
from app.db.engine import Database
from app.db.migrations import upgrade_to_head
from app.db.models import Pusher, utcnow
from app.main import create_app
from app.push.pushers import push_interval
from app.push.worker import IDLE_WAIT_MAX, ROUND_GAP, PushWorker
from tests.conftest import make_settings
from tests.factories import register, send

DELAY = 8.0  # below IDLE_WAIT_MAX: the idle wait is the delay and the grace
GATEWAY = "https://push.example.test/_matrix/push/v1/notify"


@pytest.fixture(params=["postgresql", "sqlite"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgresql":
        yield request.getfixturevalue("fresh_pg")
        return
    url = f"sqlite:///{tmp_path / 'msgsync.db'}"
    upgrade_to_head(Settings(database_url=url).database_url)
    yield url


@pytest.fixture
async def worker(own_database: str) -> AsyncIterator[tuple[PushWorker, Database, str]]:
    """A worker that is not started (its rounds are called by the test), beside a server
    whose own worker idles: nothing falls due within the delay."""
    settings = make_settings(
        own_database, push_gateways="https://push.example.test/", push_delay_seconds=DELAY
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            sender, phone = await register(client), await register(client)
            pushkey = uuid.uuid4().hex
            body = {"app_id": "dev.msgsync.test", "pushkey": pushkey, "gateway_url": GATEWAY}
            response = await client.post("/pushers", json=body, headers=phone.headers)
            assert response.status_code == 201, response.text
            db: Database = app.state.db
            idle = PushWorker(db, settings, grace=push_interval(DELAY))
            # No message yet: nothing is due, so the worker looks again after the delay.
            assert await idle.round() == pytest.approx(DELAY + push_interval(DELAY))
            await send(client, sender, phone.user_id, "due in a minute")
            # The send made it due the delay and the grace from now.
            assert DELAY - 3 < await idle.round() <= DELAY + push_interval(DELAY)
            yield idle, db, pushkey


async def _due_in(db: Database, pushkey: str, seconds: float) -> None:
    async with db.session() as session, session.begin():
        await session.execute(
            update(Pusher)
            .where(Pusher.pushkey == pushkey)
            .values(due_at=NOW + timedelta(seconds=seconds))
        )


NOW = utcnow()


async def test_the_worker_looks_again_when_the_next_push_falls_due(
    worker: tuple[PushWorker, Database, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pusher, db, pushkey = worker
    # The worker's clock stands still at NOW: its round sees exactly the due times set here.
    monkeypatch.setattr("app.push.worker.utcnow", lambda: NOW)
    # A retry or a deferral due in 3 s: the next round is then, not after the delay.
    await _due_in(db, pushkey, 3.0)
    assert await pusher.round() == pytest.approx(3.0)
    # Due in a moment: no sooner than the gap, so pushes falling due one by one share rounds.
    await _due_in(db, pushkey, 0.001)
    assert await pusher.round() == pytest.approx(ROUND_GAP)
    # Due later than the delay (never set by a send): looked at again within the delay, so a
    # lease left by a dead process is not waited on for longer.
    await _due_in(db, pushkey, 10 * DELAY)
    assert await pusher.round() == pytest.approx(DELAY + push_interval(DELAY))
    # However long the delay, an idle worker looks at least every IDLE_WAIT_MAX.
    settings = make_settings(
        db.settings.database_url, push_gateways="https://push.example.test/", push_delay_seconds=600
    )
    patient = PushWorker(db, settings, grace=push_interval(600))
    assert await patient.round() == pytest.approx(IDLE_WAIT_MAX)
