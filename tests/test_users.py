"""GET /users/{user_id}: whether a user exists, over real HTTP on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.factories import PASSWORD, new_user_id, register
from tests.server import Server, running_server
from tests.test_accounts import assert_problem

# HTTP-layer behaviour: PostgreSQL alone (tests/store/ holds the storage contract on both).
pytestmark = [pytest.mark.server, pytest.mark.one_backend]


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[Server]:
    with running_server(database_url) as server:
        yield server


@pytest.fixture
async def http(served: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url) as client:
        yield client


async def test_an_existing_user_is_found(http: httpx.AsyncClient) -> None:
    alice = await register(http, "alice")
    bob = await register(http, "bob")
    for asked in (bob.user_id, alice.user_id):  # another user, and oneself
        response = await http.get(f"/users/{asked}", headers=alice.headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"user_id": asked}


async def test_an_unknown_user_is_not_found_until_it_registers(http: httpx.AsyncClient) -> None:
    alice = await register(http, "alice")
    ghost = new_user_id("ghost")
    response = await http.get(f"/users/{ghost}", headers=alice.headers)
    assert_problem(response, 404, "user_not_found")
    assert ghost in response.json()["detail"]
    # The lookup agrees with what a send would meet, and nothing was sent by asking.
    sent = await http.post("/messages", json={"to": ghost, "body": "hi"}, headers=alice.headers)
    assert_problem(sent, 404, "recipient_not_found")
    created = await http.post("/users", json={"user_id": ghost, "password": PASSWORD})
    assert created.status_code == 201
    found = await http.get(f"/users/{ghost}", headers=alice.headers)
    assert found.status_code == 200
    assert found.json() == {"user_id": ghost}
    page = (await http.get("/sync", params={"since": 0}, headers=alice.headers)).json()
    assert page["entries"] == []


async def test_the_longest_id_registration_takes_is_looked_up(http: httpx.AsyncClient) -> None:
    alice = await register(http, "alice")
    longest = new_user_id("l").ljust(64, "x")
    response = await http.get(f"/users/{longest}", headers=alice.headers)
    assert_problem(response, 404, "user_not_found")


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc"])
async def test_the_lookup_needs_a_token(http: httpx.AsyncClient, header: str | None) -> None:
    alice = await register(http, "alice")
    headers = {"Authorization": header} if header is not None else {}
    response = await http.get(f"/users/{alice.user_id}", headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


# Ids registration refuses, as they appear in a path: upper case, a leading dash, 65
# characters, a space, a non-ASCII letter, NUL, a lone surrogate's bytes (not UTF-8).
BAD_IDS = ["Bob", "-bob", "b" * 65, "bob%20smith", "caf%C3%A9", "bob%00", "%ED%A0%80"]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_an_id_no_account_can_have_is_a_validation_error(
    http: httpx.AsyncClient, bad: str
) -> None:
    alice = await register(http, "alice")
    response = await http.get(f"/users/{bad}", headers=alice.headers)
    assert_problem(response, 422, "validation_error")
    assert [issue["loc"] for issue in response.json()["errors"]] == [["path", "user_id"]]


@pytest.mark.parametrize("bad", ["Bob", "-bob", "b" * 65, "bob smith", "café", "bob\x00"])
async def test_registration_refuses_the_same_ids(http: httpx.AsyncClient, bad: str) -> None:
    response = await http.post("/users", json={"user_id": bad, "password": PASSWORD})
    assert_problem(response, 422, "validation_error")
    assert [issue["loc"] for issue in response.json()["errors"]] == [["body", "user_id"]]
