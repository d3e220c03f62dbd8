"""The push metrics move as the gateway answers (in-process server, PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from prometheus_client import REGISTRY

from app.main import create_app
from tests.conftest import make_settings
from tests.factories import register, send
from tests.gateway import Script, running_gateway

NAMES = (
    "msgsync_pushes_sent_total",
    "msgsync_pushes_retried_total",
    "msgsync_pushes_failed_total",
    "msgsync_pushers_rejected_total",
)


def _values() -> dict[str, float]:
    return {name: REGISTRY.get_sample_value(name) or 0.0 for name in NAMES}


async def _until_moved(before: dict[str, float], expected: dict[str, float]) -> dict[str, float]:
    async with asyncio.timeout(20):
        while True:
            moved = {name: value - before[name] for name, value in _values().items()}
            if all(moved[name] >= count for name, count in expected.items()):
                return moved
            await asyncio.sleep(0.02)


async def test_sent_retried_rejected_and_failed_are_counted(database_url: str) -> None:
    with running_gateway() as gateway:
        settings = make_settings(database_url, push_gateways=gateway.url, push_delay_seconds=0.2)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                sender, phone, broken = [await register(client) for _ in range(3)]
                keys = {}
                for device in (phone, broken):
                    keys[device] = uuid.uuid4().hex
                    body = {
                        "app_id": "dev.msgsync.test",
                        "pushkey": keys[device],
                        "gateway_url": gateway.notify_url,
                    }
                    response = await client.post("/pushers", json=body, headers=device.headers)
                    assert response.status_code == 201, response.text
                # One 500 then accepted with the pushkey rejected; a 404 is not retried.
                gateway.scripts[keys[phone]] = Script(statuses=[500], reject=True)
                gateway.scripts[keys[broken]] = Script(statuses=[404])
                before = _values()
                await send(client, sender, phone.user_id, "one")
                await send(client, sender, broken.user_id, "two")
                moved = await _until_moved(
                    before,
                    {
                        "msgsync_pushes_sent_total": 1,
                        "msgsync_pushes_retried_total": 1,
                        "msgsync_pushers_rejected_total": 1,
                        "msgsync_pushes_failed_total": 1,
                    },
                )
    assert moved == {
        "msgsync_pushes_sent_total": 1,
        "msgsync_pushes_retried_total": 1,
        "msgsync_pushes_failed_total": 1,
        "msgsync_pushers_rejected_total": 1,
    }
    assert len(gateway.pushes(keys[phone])) == 2
    assert len(gateway.pushes(keys[broken])) == 1
