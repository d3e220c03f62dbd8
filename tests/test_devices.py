"""Devices under the user's control: ending another device, changing the password, idle
expiry, on both databases (in process; tests/test_devices_http.py crosses real HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from app.accounts.auth import DeviceContext, Passwords, TokenCache
from app.config import Settings
from app.db.engine import Database
from app.db.migrations import upgrade_to_head
from app.db.models import Device as DeviceRow
from app.db.models import utcnow
from app.inbox.retention import remove_idle_devices
from app.main import create_app
from tests.conftest import make_settings
from tests.factories import PASSWORD, Device, login, register, set_token_cache
from tests.test_accounts import assert_problem

NEW_PASSWORD = "a brand new secret"


async def end(
    client: httpx.AsyncClient, caller: Device, device_id: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.request(
        "DELETE", f"/devices/{device_id}", json={"password": password}, headers=caller.headers
    )


async def change_password(
    client: httpx.AsyncClient, caller: Device, old: str = PASSWORD, **extra: Any
) -> httpx.Response:
    body = {"old_password": old, "new_password": NEW_PASSWORD, **extra}
    return await client.post("/password", json=body, headers=caller.headers)


async def device_ids(client: httpx.AsyncClient, caller: Device) -> set[str]:
    response = await client.get("/devices", headers=caller.headers)
    assert response.status_code == 200, response.text
    return {d["device_id"] for d in response.json()["devices"]}


async def assert_logged_out(client: httpx.AsyncClient, device: Device) -> None:
    """Every kind of request of the device is refused, the lean send and ack paths too."""
    for method, path, body in (
        ("GET", "/devices", None),
        ("GET", "/sync", None),
        ("POST", "/messages", {"to": device.user_id, "body": "still here?"}),
        ("POST", "/ack", {"version": 0}),
    ):
        response = await client.request(method, path, json=body, headers=device.headers)
        assert_problem(response, 401, "unauthorized")


async def set_last_seen(db: Database, device_id: str, ago: timedelta) -> None:
    async with db.session() as session, session.begin():
        await session.execute(
            update(DeviceRow)
            .where(DeviceRow.device_id == device_id)
            .values(last_seen_at=utcnow() - ago)
        )


async def test_the_calling_device_is_marked_current(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    laptop = await login(client, phone.user_id, name="laptop")
    for caller in (phone, laptop):
        devices = (await client.get("/devices", headers=caller.headers)).json()["devices"]
        assert {d["device_id"]: d["current"] for d in devices} == {
            phone.device_id: caller is phone,
            laptop.device_id: caller is laptop,
        }


async def test_ending_another_device_logs_it_out_everywhere(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    phone = await register(client)
    laptop = await login(client, phone.user_id, name="laptop")
    # The phone's token is cached: a plain send or ack would be answered before the framework.
    await set_token_cache(app, client, phone, cached=True)
    response = await end(client, laptop, phone.device_id)
    assert response.status_code == 204, response.text
    await assert_logged_out(client, phone)
    assert await device_ids(client, laptop) == {laptop.device_id}
    # Logging in again is a new device.
    again = await login(client, phone.user_id)
    assert again.device_id != phone.device_id
    assert await device_ids(client, again) == {laptop.device_id, again.device_id}


async def test_a_device_may_end_itself(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    laptop = await login(client, phone.user_id, name="laptop")
    assert (await end(client, phone, phone.device_id)).status_code == 204
    await assert_logged_out(client, phone)
    assert await device_ids(client, laptop) == {laptop.device_id}


async def test_a_wrong_password_ends_nothing(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    laptop = await login(client, phone.user_id, name="laptop")
    response = await end(client, laptop, phone.device_id, password="not the password")
    assert_problem(response, 401, "bad_credentials")
    assert await device_ids(client, phone) == {phone.device_id, laptop.device_id}


async def test_another_users_device_is_not_found_like_a_missing_one(
    client: httpx.AsyncClient,
) -> None:
    alice = await register(client)
    mallory = await register(client)
    theirs = await end(client, mallory, alice.device_id)
    missing = await end(client, mallory, "0123456789abcdef")
    for response in (theirs, missing):
        assert_problem(response, 404, "device_not_found")
    assert theirs.json() == missing.json()
    # Alice's device still works.
    assert await device_ids(client, alice) == {alice.device_id}


@pytest.mark.parametrize("body", [None, {}, {"password": PASSWORD, "extra": 1}])
async def test_ending_a_device_needs_the_password(
    client: httpx.AsyncClient, body: dict[str, Any] | None
) -> None:
    phone = await register(client)
    response = await client.request(
        "DELETE", f"/devices/{phone.device_id}", json=body, headers=phone.headers
    )
    assert_problem(response, 422, "validation_error")
    assert await device_ids(client, phone) == {phone.device_id}


async def test_ending_a_device_needs_a_token(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    response = await client.request(
        "DELETE", f"/devices/{phone.device_id}", json={"password": PASSWORD}
    )
    assert_problem(response, 401, "unauthorized")
    assert await device_ids(client, phone) == {phone.device_id}


async def test_a_password_change_logs_out_the_other_devices(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    laptop = await register(client)
    phone = await login(client, laptop.user_id, name="phone")
    tablet = await login(client, laptop.user_id, name="tablet")
    await set_token_cache(app, client, phone, cached=True)
    assert (await change_password(client, laptop)).status_code == 204
    for other in (phone, tablet):
        await assert_logged_out(client, other)
    assert await device_ids(client, laptop) == {laptop.device_id}
    old = await client.post("/login", json={"user_id": laptop.user_id, "password": PASSWORD})
    assert_problem(old, 401, "bad_credentials")
    new = await client.post("/login", json={"user_id": laptop.user_id, "password": NEW_PASSWORD})
    assert new.status_code == 201, new.text


async def test_a_password_change_may_keep_the_other_devices(client: httpx.AsyncClient) -> None:
    laptop = await register(client)
    phone = await login(client, laptop.user_id, name="phone")
    response = await change_password(client, laptop, logout_other_devices=False)
    assert response.status_code == 204, response.text
    assert await device_ids(client, phone) == {laptop.device_id, phone.device_id}


async def test_a_wrong_old_password_changes_nothing(client: httpx.AsyncClient) -> None:
    laptop = await register(client)
    phone = await login(client, laptop.user_id, name="phone")
    assert_problem(await change_password(client, laptop, old="guess guess"), 401, "bad_credentials")
    assert await device_ids(client, phone) == {laptop.device_id, phone.device_id}
    still = await client.post("/login", json={"user_id": laptop.user_id, "password": PASSWORD})
    assert still.status_code == 201, still.text


@pytest.mark.parametrize(
    "body",
    [
        {"old_password": PASSWORD, "new_password": "short"},
        {"old_password": PASSWORD, "new_password": "p" * 1025},
        {"old_password": PASSWORD},
        {"new_password": NEW_PASSWORD},
        {"old_password": PASSWORD, "new_password": NEW_PASSWORD, "logout_other_devices": "x"},
    ],
)
async def test_the_new_password_follows_the_registration_rules(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    laptop = await register(client)
    response = await client.post("/password", json=body, headers=laptop.headers)
    assert_problem(response, 422, "validation_error")
    still = await client.post("/login", json={"user_id": laptop.user_id, "password": PASSWORD})
    assert still.status_code == 201, still.text


class _ChangeDuringLogin(Passwords):
    """Passwords whose next verification is followed by a password change committed through
    the API, before login() goes on to create its device: the interleaving of a login and
    a password change racing each other, made deterministic."""

    change: Any = None

    async def verify(self, stored: str | None, password: str) -> bool:
        ok = await super().verify(stored, password)
        change, self.change = self.change, None
        if change is not None:
            await change()
        return ok


async def test_a_login_racing_a_password_change_does_not_survive_it(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    laptop = await register(client)
    passwords = _ChangeDuringLogin(settings)
    app.state.passwords = passwords

    async def change() -> None:
        assert (await change_password(client, laptop)).status_code == 204

    passwords.change = change
    # The old password was right when login() checked it, but is not any more.
    response = await client.post("/login", json={"user_id": laptop.user_id, "password": PASSWORD})
    assert_problem(response, 401, "bad_credentials")
    assert await device_ids(client, laptop) == {laptop.device_id}


async def test_a_device_idle_too_long_answers_401(app: FastAPI, client: httpx.AsyncClient) -> None:
    db: Database = app.state.db
    phone = await register(client)
    drawer = await login(client, phone.user_id, name="tablet in a drawer")
    recent = await login(client, phone.user_id, name="used last month")
    await set_last_seen(db, drawer.device_id, timedelta(days=90, minutes=1))
    await set_last_seen(db, recent.device_id, timedelta(days=89))
    response = await client.get("/sync", headers=drawer.headers)
    assert_problem(response, 401, "unauthorized")
    assert "90 days" in response.json()["detail"]
    await assert_logged_out(client, drawer)
    # Still listed (and removable) until the retention job removes it.
    assert await device_ids(client, recent) == {phone.device_id, drawer.device_id, recent.device_id}
    # A device used again is seen now, and stays.
    async with db.session() as session:
        seen = await session.scalar(
            select(DeviceRow.last_seen_at).where(DeviceRow.device_id == recent.device_id)
        )
    assert seen is not None
    assert utcnow() - seen < timedelta(days=1)


async def test_idle_expiry_can_be_turned_off(database_url: str) -> None:
    settings = make_settings(database_url, device_idle_days=0)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        phone = await register(client)
        await set_last_seen(app.state.db, phone.device_id, timedelta(days=3650))
        assert await device_ids(client, phone) == {phone.device_id}


def test_the_token_cache_refuses_a_device_read_before_its_revocation() -> None:
    cache = TokenCache()
    device = DeviceContext("d1", "alice")
    read_before = cache.stamp()
    cache.revoke(["d1"])
    cache.put(b"t1", device, read_before)
    assert cache.get(b"t1") is None
    cache.put(b"t1", device, cache.stamp())  # read after the revocation: a new login's row
    assert cache.get(b"t1") == device
    read_before = cache.stamp()
    cache.clear()  # the listener reconnected: revocations may have been missed
    cache.put(b"t1", device, read_before)
    assert cache.get(b"t1") is None


@pytest.fixture
def own_url(database_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the same kind for one test: the retention job looks at every device."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'msgsync.db'}"
        upgrade_to_head(Settings(database_url=url).database_url)
        yield url
        return
    yield request.getfixturevalue("fresh_pg")


@pytest.fixture
async def own_client(own_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(make_settings(own_url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield app, client


async def test_retention_removes_idle_devices_with_a_fixed_clock(
    own_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = own_client
    db: Database = app.state.db
    phone = await register(client)
    drawer = await login(client, phone.user_id, name="drawer")
    attic = await login(client, phone.user_id, name="attic")
    await set_last_seen(db, drawer.device_id, timedelta(days=40))
    await set_last_seen(db, attic.device_id, timedelta(days=100))
    now = utcnow() + timedelta(days=60)  # the drawer's device is then 100 days idle too

    dry = await remove_idle_devices(db, 90, now=now, dry_run=True)
    assert dry.removed == 2
    assert await device_ids(client, phone) == {phone.device_id, drawer.device_id, attic.device_id}

    off = await remove_idle_devices(db, 0, now=now)
    assert (off.removed, off.cutoff) == (0, None)

    done = await remove_idle_devices(db, 90, now=now)
    assert done.removed == 2
    assert done.cutoff == (now - timedelta(days=90)).isoformat().replace("+00:00", "Z")
    assert await device_ids(client, phone) == {phone.device_id}
    assert (await remove_idle_devices(db, 90, now=now)).removed == 0


async def test_odd_device_ids_are_not_found(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    for unknown in ("x" * 32, "~!"):
        assert_problem(await end(client, phone, unknown), 404, "device_not_found")
    for invalid in ("%00", "%ED%A0%80", "x" * 33, "a%20b"):
        assert_problem(await end(client, phone, invalid), 422, "validation_error")


async def test_the_openapi_document_describes_the_errors(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    deleting = paths["/devices/{device_id}"]["delete"]["responses"]
    changing = paths["/password"]["post"]["responses"]
    for responses, codes in ((deleting, {"401", "404"}), (changing, {"401"})):
        assert codes <= responses.keys()
        for code in codes:
            assert "application/problem+json" in responses[code]["content"]


async def test_wrong_passwords_are_throttled_on_the_calling_device(database_url: str) -> None:
    """A stolen token must not let its holder guess the password at DELETE /devices or
    POST /password unthrottled: wrong passwords there use up the calling device's attempts,
    and those of no other device nor the account's logins (tests/test_lockout.py)."""
    settings = make_settings(database_url, password_attempts_per_device=3)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:
            phone = await register(c)
            laptop = await login(c, phone.user_id, "laptop")
            assert_problem(
                await end(c, phone, laptop.device_id, password="guess 1"), 401, "bad_credentials"
            )
            assert_problem(await change_password(c, phone, old="guess 2"), 401, "bad_credentials")
            assert_problem(
                await end(c, phone, laptop.device_id, password="guess 3"), 401, "bad_credentials"
            )
            # The device's attempts are used up: even the right password is refused there.
            refused = await end(c, phone, laptop.device_id)
            assert_problem(refused, 429, "too_many_attempts")
            assert int(refused.headers["retry-after"]) > 0
            assert await device_ids(c, phone) == {phone.device_id, laptop.device_id}
            # Not on the other device, nor at login.
            answer = await c.post("/login", json={"user_id": phone.user_id, "password": PASSWORD})
            assert answer.status_code == 201, answer.text
            assert (await end(c, laptop, phone.device_id)).status_code == 204
