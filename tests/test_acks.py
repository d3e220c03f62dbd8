"""Ack group commit: concurrent acks land together, cursors never move back, errors reach all."""

from __future__ import annotations

import asyncio
import random

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import delete

from app.db.engine import Database
from app.db.models import Device as DeviceRow
from app.errors import AppError
from app.inbox import acks as acks_module
from app.inbox.acks import AckBatcher, PendingAck, write_acks
from tests.factories import (
    FRAMEWORK_REACHED,
    Device,
    login,
    make_the_framework_unreachable,
    register,
    send,
    set_token_cache,
)
from tests.test_accounts import assert_problem


async def _devices_of(client: httpx.AsyncClient, device: Device) -> dict[str, int]:
    response = await client.get("/devices", headers=device.headers)
    return {d["device_id"]: d["acked_version"] for d in response.json()["devices"]}


async def test_concurrent_acks_from_many_devices_all_land(client: httpx.AsyncClient) -> None:
    users, devices_per_user, messages = 4, 5, 10
    owners = [await register(client, "acker") for _ in range(users)]
    for owner in owners:
        for i in range(messages):
            await send(client, owner, owner.user_id, f"m{i}")
    devices = [
        await login(client, owner.user_id, name=f"d{i}")
        for owner in owners
        for i in range(devices_per_user)
    ]
    # 200 acks: each device acks every version once, in a shuffled order, all at once.
    work = [(device, v) for device in devices for v in range(1, messages + 1)]
    random.Random(6).shuffle(work)
    responses = await asyncio.gather(
        *(client.post("/ack", json={"version": v}, headers=d.headers) for d, v in work)
    )
    assert len(responses) == 200
    for (device, version), response in zip(work, responses, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["device_id"] == device.device_id
        assert response.json()["acked_version"] >= version
    for owner in owners:
        cursors = await _devices_of(client, owner)
        mine = {d.device_id for d in devices if d.user_id == owner.user_id}
        assert {cursors[d] for d in mine} == {messages}


async def test_a_lower_ack_in_the_same_batch_never_moves_the_cursor_back(app: FastAPI) -> None:
    db: Database = app.state.db
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as client:
        owner = await register(client, "batch")
        for i in range(9):
            await send(client, owner, owner.user_id, f"m{i}")
        loop = asyncio.get_running_loop()

        def pending(version: int) -> PendingAck:
            return PendingAck(owner.user_id, owner.device_id, version, loop.create_future())

        # Higher first and lower second, then the reverse: the cursor ends at the maximum.
        assert await write_acks(db, [pending(7), pending(3)]) == [7, 7]
        assert await write_acks(db, [pending(2), pending(5)]) == [7, 7]
        outcome = await write_acks(db, [pending(8), pending(10), pending(4)])
        assert outcome[0] == 8
        assert outcome[2] == 8
        assert isinstance(outcome[1], AppError)
        assert outcome[1].code == "ack_ahead"
        assert (await _devices_of(client, owner))[owner.device_id] == 8


async def test_ahead_and_revoked_are_decided_per_ack(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    laptop = await login(client, alice.user_id, name="laptop")
    await send(client, alice, alice.user_id, "one")
    await client.post("/logout", headers=laptop.headers)
    ok, ahead = await asyncio.gather(
        client.post("/ack", json={"version": 1}, headers=alice.headers),
        client.post("/ack", json={"version": 2}, headers=alice.headers),
    )
    assert ok.json()["acked_version"] == 1
    assert_problem(ahead, 409, "ack_ahead")
    assert ahead.json()["latest_version"] == 1


async def test_a_device_revoked_after_auth_gets_401(app: FastAPI) -> None:
    db: Database = app.state.db
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as client:
        alice = await register(client)
        await send(client, alice, alice.user_id, "one")
        await client.post("/logout", headers=alice.headers)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        [outcome] = await write_acks(db, [PendingAck(alice.user_id, alice.device_id, 1, future)])
        assert isinstance(outcome, AppError)
        assert outcome.status == 401


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (psycopg.OperationalError("terminating connection"), 503, "database_unavailable"),
        (RuntimeError("disk on fire"), 500, "internal_error"),
    ],
    ids=["database", "bug"],
)
async def test_a_failed_batch_fails_every_waiter(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, failure: Exception, status: int, code: str
) -> None:
    async def broken(db: Database, batch: object) -> list[int | AppError]:
        raise failure

    monkeypatch.setattr(acks_module, "write_acks", broken)
    batcher = AckBatcher(app.state.db, max_batch=10)
    await batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.ack("u", f"d{i}", 1) for i in range(25)), return_exceptions=True
        )
    finally:
        await batcher.stop()
    assert len(results) == 25
    for result in results:
        assert isinstance(result, AppError)
        assert (result.status, result.code) == (status, code)
        assert "fire" not in result.detail
        assert "terminating" not in result.detail
        assert ("Retry-After" in result.headers) == (status == 503)


# Bodies a client might send to /ack, well-formed or not. The lean path (app.edge.hotpaths) takes
# only the first kind when the token is cached; the application answers the rest.
_ACK_BODIES: list[tuple[str, bytes, str]] = [
    ("valid", b'{"version": 2}', "application/json"),
    ("zero", b'{"version": 0}', "application/json"),
    ("charset", b'{"version": 2}', "application/json; charset=utf-8"),
    ("ahead", b'{"version": 99}', "application/json"),
    ("string", b'{"version": "2"}', "application/json"),
    ("float", b'{"version": 2.0}', "application/json"),
    ("boolean", b'{"version": true}', "application/json"),
    ("negative", b'{"version": -1}', "application/json"),
    ("above bigint", b'{"version": 9223372036854775808}', "application/json"),
    ("extra field", b'{"version": 2, "device": "x"}', "application/json"),
    ("no version", b"{}", "application/json"),
    ("a list", b"[2]", "application/json"),
    ("not json", b'{"version": ', "application/json"),
    ("text", b'{"version": 2}', "text/plain"),
    ("no content type", b'{"version": 2}', ""),
    ("too large", b'{"version": 2, "pad": "' + b"x" * 70_000 + b'"}', "application/json"),
]


@pytest.mark.parametrize(
    ("body", "content_type"), [b[1:] for b in _ACK_BODIES], ids=[b[0] for b in _ACK_BODIES]
)
async def test_an_ack_is_answered_alike_whether_its_token_is_cached_or_not(
    app: FastAPI, client: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    alice = await register(client, "alice")
    await send(client, alice, alice.user_id, "one")
    await send(client, alice, alice.user_id, "two")
    headers = {**alice.headers, "Content-Type": content_type} if content_type else alice.headers
    answers = []
    for cached in (False, True):
        await set_token_cache(app, client, alice, cached)
        response = await client.post("/ack", content=body, headers=headers)
        problem = response.json()
        answers.append((response.status_code, response.headers["content-type"], problem))
    assert answers[0] == answers[1]


async def test_a_well_formed_ack_from_a_known_device_skips_the_framework(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await register(client, "alice")
    await send(client, alice, alice.user_id, "one")
    await set_token_cache(app, client, alice, cached=True)
    make_the_framework_unreachable(app)
    response = await client.post("/ack", json={"version": 1}, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"device_id": alice.device_id, "acked_version": 1}
    # Not valid: the application answers (here, the overridden dependency fails, which is
    # answered 500 and logged).
    response = await client.post("/ack", json={"version": -1}, headers=alice.headers)
    assert_problem(response, 500, "internal_error")
    assert FRAMEWORK_REACHED in caplog.text


async def test_a_device_deleted_behind_a_cached_token_gets_401_from_the_lean_path(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await register(client, "alice")
    await send(client, alice, alice.user_id, "one")
    await set_token_cache(app, client, alice, cached=True)
    db: Database = app.state.db
    async with db.session() as session, session.begin():
        await session.execute(delete(DeviceRow).where(DeviceRow.device_id == alice.device_id))
    response = await client.post("/ack", json={"version": 1}, headers=alice.headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
