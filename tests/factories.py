"""Plain helpers that create users and devices and send messages through the HTTP API."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from argon2 import PasswordHasher
from fastapi import FastAPI

from app.accounts.auth import token_digest
from app.api.deps import current_device
from app.db.engine import Database
from app.inbox.sync import send_message

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Device:
    user_id: str
    device_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_user_id(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def register(client: httpx.AsyncClient, prefix: str = "u") -> Device:
    user_id = new_user_id(prefix)
    response = await client.post("/users", json={"user_id": user_id, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return await login(client, user_id)


async def login(client: httpx.AsyncClient, user_id: str, name: str = "phone") -> Device:
    response = await client.post(
        "/login", json={"user_id": user_id, "password": PASSWORD, "device_name": name}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Device(user_id, body["device_id"], body["access_token"])


def devices_in_database(postgresql_url: str, count: int, prefix: str = "u") -> list[Device]:
    """`count` users with a device each (password PASSWORD), written straight into a
    PostgreSQL database in two statements: the set-up of a test about what many devices do
    once they exist, where registering each through the API would cost more than the test."""
    password_hash = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash(PASSWORD)
    devices = [
        Device(new_user_id(prefix), secrets.token_hex(8), secrets.token_urlsafe(32))
        for _ in range(count)
    ]
    with (
        psycopg.connect(postgresql_url.replace("+psycopg", "")) as conn,
        conn.cursor() as cursor,
    ):
        cursor.executemany(
            "INSERT INTO users (user_id, password_hash, created_at) VALUES (%s, %s, now())",
            [(d.user_id, password_hash) for d in devices],
        )
        cursor.executemany(
            "INSERT INTO devices (device_id, user_id, token_hash, name, created_at,"
            " last_seen_at) VALUES (%s, %s, %s, 'phone', now(), now())",
            [(d.device_id, d.user_id, token_digest(f"Bearer {d.token}")) for d in devices],
        )
    return devices


async def send(
    client: httpx.AsyncClient, sender: Device, to: str, body: str, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/messages", json={"to": to, "body": body, **extra}, headers=sender.headers
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def sync(client: httpx.AsyncClient, device: Device, **params: Any) -> dict[str, Any]:
    response = await client.get("/sync", params=params, headers=device.headers)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def sync_all(
    client: httpx.AsyncClient, device: Device, since: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    """Every entry after `since`, following has_more page by page."""
    entries: list[dict[str, Any]] = []
    while True:
        page = await sync(client, device, since=since, limit=limit)
        entries.extend(page["entries"])
        since = page["next_since"]
        if not page["has_more"]:
            return entries


async def send_many(
    db: Database, sender: str, to: str, count: int, prefix: str = "m"
) -> list[dict[str, Any]]:
    """`count` messages through the send transaction itself, skipping HTTP: for bulk loading."""
    return [
        (await send_message(db, sender, to, f"{prefix}{i}", None, 16 * 1024)).message
        for i in range(count)
    ]


async def send_numbered(
    client: httpx.AsyncClient,
    sender: Device,
    to: str,
    count: int,
    statuses: list[int],
    client_msg_ids: bool = True,
) -> None:
    """`count` sends, one after another, with bodies "<sender>:<i>"; records every status."""
    for i in range(count):
        body: dict[str, Any] = {"to": to, "body": f"{sender.user_id}:{i}"}
        if client_msg_ids:
            body["client_msg_id"] = f"c{i}"
        response = await client.post("/messages", json=body, headers=sender.headers)
        statuses.append(response.status_code)


async def set_token_cache(
    app: FastAPI, client: httpx.AsyncClient, device: Device, cached: bool
) -> None:
    """Put the device's token in the process's cache (one authenticated request), or empty
    the cache: a plain send or ack then takes app.edge.hotpaths' lean path, or the framework's."""
    if cached:
        response = await client.get("/devices", headers=device.headers)
        assert response.status_code == 200, response.text
    else:
        app.state.tokens.clear()


FRAMEWORK_REACHED = "the lean path should have answered"


def make_the_framework_unreachable(app: FastAPI) -> None:
    """From now on a request that reaches a route needing a device raises AssertionError:
    only app.edge.hotpaths' lean path can answer."""

    async def unreachable() -> None:
        raise AssertionError(FRAMEWORK_REACHED)

    app.dependency_overrides[current_device] = unreachable
