"""Pushes to an https gateway (a self-signed certificate), in-process on PostgreSQL and SQLite:
untrusted, each attempt fails, is logged with the TLS error and retried; trusted (the
operator's SSL_CERT_FILE), the push goes through."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from tests.conftest import make_settings
from tests.factories import register, send
from tests.gateway import Gateway, running_gateway
from tests.tls import self_signed


async def _push_one(database_url: str, gateway: Gateway) -> str:
    """Register a pusher at the gateway, send it a message; returns the pushkey."""
    settings = make_settings(database_url, push_gateways=gateway.url, push_delay_seconds=0.2)
    app = create_app(settings)
    key = uuid.uuid4().hex
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            sender, phone = await register(client), await register(client)
            body = {"app_id": "dev.msgsync.test", "pushkey": key, "gateway_url": gateway.notify_url}
            response = await client.post("/pushers", json=body, headers=phone.headers)
            assert response.status_code == 201, response.text
            await send(client, sender, phone.user_id, "over https")
            await asyncio.sleep(2.0)  # the delay, then an attempt or a few (backoff 0.25 s)
    return key


async def test_an_untrusted_gateway_certificate_is_retried_and_logged(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    certificate = self_signed(tmp_path)
    with running_gateway(tls=certificate.server()) as gateway:
        with caplog.at_level(logging.WARNING, logger="app.push.worker"):
            key = await _push_one(database_url, gateway)
        assert gateway.pushes(key) == []
    failures = [r.getMessage() for r in caplog.records if r.name == "app.push.worker"]
    assert failures, "no failed attempt was logged"
    assert all("retrying in" in line for line in failures)
    assert "CERTIFICATE_VERIFY_FAILED" in failures[0]
    assert gateway.notify_url in failures[0]


async def test_a_trusted_gateway_certificate_is_pushed(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    with running_gateway(tls=certificate.server()) as gateway:
        key = await _push_one(database_url, gateway)
        [notification] = gateway.pushes(key)
    assert notification["counts"] == {"unread": 1}
