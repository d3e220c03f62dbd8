"""Times come from the database's clock, not the host's: hosts whose clocks disagree still
stamp, judge recalls, cut retention and judge devices' idleness by one clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from app.accounts import auth
from app.db import models
from app.db.engine import Database
from app.db.models import Device as DeviceRow
from app.inbox import operations, retention, sync
from app.inbox.retention import prune, remove_idle_devices
from app.main import create_app
from tests.conftest import make_settings, module_database
from tests.factories import Device, login, register, send, sync_all

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


@pytest.fixture(scope="module")
def devices_url(database_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of the same kind for this module alone: the idle-device job removes every
    user's idle devices, those other modules' tests leave behind included."""
    with module_database(database_url, request, "clock") as url:
        yield url


@pytest.mark.parametrize("skew", [timedelta(days=100), -timedelta(days=100)], ids=["fast", "slow"])
async def test_devices_are_judged_by_the_database_clock(
    devices_url: str, monkeypatch: pytest.MonkeyPatch, skew: timedelta
) -> None:
    """A device's last_seen_at and its idleness (90 days) go by the database's clock on a host
    whose clock is 100 days off either way: a fresh device answers, a device idle for 91
    days does not, and a refresh stamps the database's time."""

    def skewed_clock() -> datetime:
        return datetime.now(UTC) + skew

    for module in (models, auth, retention):
        monkeypatch.setattr(module, "utcnow", skewed_clock, raising=False)
    application = create_app(make_settings(devices_url, device_idle_days=90))
    async with application.router.lifespan_context(application):
        db: Database = application.state.db
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:

            async def seen(device: Device) -> datetime:
                response = await c.get("/devices", headers=device.headers)
                assert response.status_code == 200, response.text
                (row,) = [
                    d for d in response.json()["devices"] if d["device_id"] == device.device_id
                ]
                return _parse(row["last_seen_at"])

            async def db_now() -> datetime:
                async with db.statement() as conn:
                    return await db.now(conn)

            async def set_seen(device: Device, moment: datetime) -> None:
                async with db.session() as session, session.begin():
                    await session.execute(
                        update(DeviceRow)
                        .where(DeviceRow.device_id == device.device_id)
                        .values(last_seen_at=moment)
                    )
                application.state.tokens.clear()  # the next request reads the device

            before = await db_now()
            phone = await register(c)
            assert before <= await seen(phone) <= await db_now()

            # Not seen for two minutes by the database's clock: refreshed to its time.
            await set_seen(phone, await db_now() - timedelta(minutes=2))
            before = await db_now()
            assert before <= await seen(phone) <= await db_now()

            drawer = await login(c, phone.user_id, "tablet in a drawer")
            await set_seen(drawer, await db_now() - timedelta(days=91))
            response = await c.get("/devices", headers=drawer.headers)
            assert response.status_code == 401, response.text
            # The retention job's idle cut-off goes by the same clock.
            report = await remove_idle_devices(db, 90)
            assert report.removed == 1
            assert await seen(phone) >= before
            listed = (await c.get("/devices", headers=phone.headers)).json()["devices"]
            assert [d["device_id"] for d in listed] == [phone.device_id]
