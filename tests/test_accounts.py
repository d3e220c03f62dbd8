"""Accounts, devices and tokens."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import PASSWORD, login, new_user_id, register


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()


async def test_register_login_and_list_devices(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    laptop = await login(client, phone.user_id, name="laptop")
    response = await client.get("/devices", headers=laptop.headers)
    assert response.status_code == 200
    devices = response.json()["devices"]
    assert {d["device_id"] for d in devices} == {phone.device_id, laptop.device_id}
    assert {d["name"] for d in devices} == {"phone", "laptop"}
    assert all(d["acked_version"] == 0 for d in devices)


async def test_duplicate_user_is_a_conflict(client: httpx.AsyncClient) -> None:
    user = await register(client)
    response = await client.post("/users", json={"user_id": user.user_id, "password": PASSWORD})
    assert_problem(response, 409, "user_exists")


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "Upper", "password": PASSWORD},
        {"user_id": "-dash-first", "password": PASSWORD},
        {"user_id": "x" * 65, "password": PASSWORD},
        {"user_id": "ok", "password": "short"},
        {"user_id": "ok", "password": "p" * 1025},
        {"user_id": "ok"},
    ],
)
async def test_bad_registration_is_a_validation_problem(
    client: httpx.AsyncClient, body: dict[str, str]
) -> None:
    response = await client.post("/users", json=body)
    assert_problem(response, 422, "validation_error")
    assert response.json()["errors"]


async def test_bad_credentials(client: httpx.AsyncClient) -> None:
    user = await register(client)
    wrong = await client.post("/login", json={"user_id": user.user_id, "password": "nope-nope"})
    assert_problem(wrong, 401, "bad_credentials")
    unknown = await client.post("/login", json={"user_id": new_user_id(), "password": PASSWORD})
    assert_problem(unknown, 401, "bad_credentials")


async def test_logout_revokes_only_that_device(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    laptop = await login(client, phone.user_id, name="laptop")
    response = await client.post("/logout", headers=phone.headers)
    assert response.status_code == 204
    assert_problem(await client.get("/devices", headers=phone.headers), 401, "unauthorized")
    devices = (await client.get("/devices", headers=laptop.headers)).json()["devices"]
    assert [d["device_id"] for d in devices] == [laptop.device_id]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/devices"),
        ("GET", "/sync"),
        ("POST", "/ack"),
        ("POST", "/messages"),
        ("POST", "/logout"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
async def test_protected_endpoints_need_a_valid_token(
    client: httpx.AsyncClient, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = await client.request(method, path, headers=headers, json={})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_devices_of_other_users_are_not_listed(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    devices = (await client.get("/devices", headers=bob.headers)).json()["devices"]
    assert alice.device_id not in {d["device_id"] for d in devices}


async def test_public_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    spec = (await client.get("/openapi.json")).json()
    assert {"/users", "/login", "/messages", "/sync", "/ack"} <= spec["paths"].keys()
    assert_problem(await client.get("/no-such-path"), 404, "not_found")
