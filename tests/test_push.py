"""Pushers over the HTTP API, on PostgreSQL and SQLite: register, list, replace, delete."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.conftest import make_settings
from tests.factories import PASSWORD, Device, login, register

GATEWAY = "https://push.example.test/_matrix/push/v1/notify"


@pytest.fixture
def settings(database_url: str) -> Settings:
    # A long delay: these tests are about the registry, not about sending.
    return make_settings(
        database_url, push_gateways="https://push.example.test/", push_delay_seconds=3600
    )


def pusher(**overrides: Any) -> dict[str, Any]:
    body = {"app_id": "dev.msgsync.ios", "pushkey": uuid.uuid4().hex, "gateway_url": GATEWAY}
    return body | overrides


async def add(client: httpx.AsyncClient, device: Device, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/pushers", json=body, headers=device.headers)


async def test_register_and_list(client: httpx.AsyncClient) -> None:
    device = await register(client)
    body = pusher(data={"badge": True})
    response = await add(client, device, body)
    assert response.status_code == 201, response.text
    created = response.json()["pusher"]
    assert created["device_id"] == device.device_id
    assert created["format"] == "id_only"
    assert created["data"] == {"badge": True}
    listed = (await client.get("/pushers", headers=device.headers)).json()["pushers"]
    assert listed == [created]


async def test_the_list_holds_every_device_of_the_user_and_nobody_else(
    client: httpx.AsyncClient,
) -> None:
    phone = await register(client)
    tablet = await login(client, phone.user_id, "tablet")
    stranger = await register(client)
    for device in (phone, tablet, stranger):
        assert (await add(client, device, pusher())).status_code == 201
    mine = (await client.get("/pushers", headers=tablet.headers)).json()["pushers"]
    assert {p["device_id"] for p in mine} == {phone.device_id, tablet.device_id}


async def test_registering_again_replaces(client: httpx.AsyncClient) -> None:
    device = await register(client)
    body = pusher()
    assert (await add(client, device, body)).status_code == 201
    response = await add(client, device, body | {"format": "full", "data": {"n": 2}})
    assert response.status_code == 200, response.text
    listed = (await client.get("/pushers", headers=device.headers)).json()["pushers"]
    assert [(p["format"], p["data"]) for p in listed] == [("full", {"n": 2})]


async def test_a_pushkey_registered_on_another_device_moves_to_it(
    client: httpx.AsyncClient,
) -> None:
    old = await register(client)
    new = await login(client, old.user_id, "after reinstall")
    body = pusher()
    await add(client, old, body)
    assert (await add(client, new, body)).status_code == 200
    listed = (await client.get("/pushers", headers=old.headers)).json()["pushers"]
    assert [p["device_id"] for p in listed] == [new.device_id]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.test/_matrix/push/v1/notify",
        "http://push.example.test/_matrix/push/v1/notify",  # not the allowed scheme
        "https://push.example.test.evil.test/",
        "https://user@push.example.test/x",
        "file:///etc/passwd",
    ],
)
async def test_a_gateway_outside_the_allowlist_is_refused(
    client: httpx.AsyncClient, url: str
) -> None:
    device = await register(client)
    response = await add(client, device, pusher(gateway_url=url))
    assert response.status_code == 422
    assert response.json()["code"] == "gateway_not_allowed"
    assert (await client.get("/pushers", headers=device.headers)).json()["pushers"] == []


async def test_without_gateways_push_is_disabled(database_url: str) -> None:
    app: FastAPI = create_app(make_settings(database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            device = await register(client)
            response = await add(client, device, pusher())
    assert response.status_code == 422
    assert response.json()["code"] == "gateway_not_allowed"


async def test_delete(client: httpx.AsyncClient) -> None:
    device = await register(client)
    other = await login(client, device.user_id, "tablet")
    body = pusher()
    await add(client, device, body)
    path = f"/pushers/{body['app_id']}/{body['pushkey']}"
    # Any device of the user may remove it; a stranger is told there is no such pusher.
    stranger = await register(client)
    missing = await client.delete(path, headers=stranger.headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "pusher_not_found"
    assert (await client.delete(path, headers=other.headers)).status_code == 204
    assert (await client.get("/pushers", headers=device.headers)).json()["pushers"] == []
    assert (await client.delete(path, headers=device.headers)).status_code == 404


async def test_logout_removes_the_device_pushers_only(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    tablet = await login(client, phone.user_id, "tablet")
    await add(client, phone, pusher())
    kept = pusher()
    await add(client, tablet, kept)
    assert (await client.post("/logout", headers=phone.headers)).status_code == 204
    listed = (await client.get("/pushers", headers=tablet.headers)).json()["pushers"]
    assert [p["pushkey"] for p in listed] == [kept["pushkey"]]


@pytest.mark.parametrize(
    "change",
    [{"format": "text"}, {"pushkey": ""}, {"pushkey": "k" * 513}, {"data": [1]}, {"x": 1}],
)
async def test_invalid_bodies_are_validation_errors(
    client: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    device = await register(client)
    response = await add(client, device, pusher(**change))
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_pushers_need_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/pushers")).status_code == 401
    assert (await client.post("/pushers", json=pusher())).status_code == 401


async def test_ending_a_device_from_another_removes_its_pushers(
    client: httpx.AsyncClient,
) -> None:
    phone = await register(client)
    laptop = await login(client, phone.user_id, "laptop")
    assert (await add(client, phone, pusher())).status_code == 201
    kept = (await add(client, laptop, pusher())).json()["pusher"]
    response = await client.request(
        "DELETE",
        f"/devices/{phone.device_id}",
        json={"password": PASSWORD},
        headers=laptop.headers,
    )
    assert response.status_code == 204, response.text
    listed = (await client.get("/pushers", headers=laptop.headers)).json()["pushers"]
    assert listed == [kept]


async def test_a_password_change_removes_the_other_devices_pushers(
    client: httpx.AsyncClient,
) -> None:
    phone = await register(client)
    tablet = await login(client, phone.user_id, "tablet")
    assert (await add(client, tablet, pusher())).status_code == 201
    kept = (await add(client, phone, pusher())).json()["pusher"]
    response = await client.post(
        "/password",
        json={"old_password": PASSWORD, "new_password": "a new password"},
        headers=phone.headers,
    )
    assert response.status_code == 204, response.text
    listed = (await client.get("/pushers", headers=phone.headers)).json()["pushers"]
    assert listed == [kept]


async def test_a_wrong_method_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    # /pushers is served by two routes (GET and POST): Allow must name both.
    response = await client.request("PATCH", "/pushers")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


async def test_data_is_passed_through_whatever_its_numbers(client: httpx.AsyncClient) -> None:
    device = await register(client)
    data = {"n": 2**64, "m": -(10**30), "nested": [{"x": 1.5, "s": "caf\u00e9"}]}
    response = await add(client, device, pusher(data=data))
    assert response.status_code == 201, response.text
    assert response.json()["pusher"]["data"] == data
    listed = (await client.get("/pushers", headers=device.headers)).json()["pushers"]
    assert [p["data"] for p in listed] == [data]
