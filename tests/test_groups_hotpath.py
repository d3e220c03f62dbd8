"""A group send is answered alike by the edge's lean path (app.edge.hotpaths) and by the
framework's route, over real HTTP: the same status, headers and body, for a message sent, a
retry, and every error the route can answer. On PostgreSQL: both paths ask the same store
interface, which tests/store/ checks on PostgreSQL and SQLite alike; what differs here is
the HTTP layer's code, which is the same whatever the store.

The edge takes a request whose content type is exactly application/json; the route reads
any JSON type as JSON, so the same body sent as application/vnd.msgsync+json reaches the
route. Each case runs both ways with a device whose token the process has cached, and with
one just logged in (its first request authenticates it)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from tests.factories import (
    login,
    make_the_framework_unreachable,
    register,
    set_token_cache,
    sync,
)
from tests.server import Server, running_server

pytestmark = pytest.mark.server

# A per-user send rate that no case meets but the one that exhausts it on purpose.
BURST = 4

# Headers that differ between any two answers, whoever gives them.
_VARYING = {"date", "x-request-id", "content-length"}
_GROUP_ID = re.compile(r"g[0-9a-f]{20}")


@pytest.fixture(scope="module")
def server(postgresql_url: str) -> Iterator[Server]:
    env = {"MSGSYNC_SEND_RATE": "0.01", "MSGSYNC_SEND_BURST": str(BURST)}
    # One process: the token a request caches is the one the next request meets.
    with running_server(postgresql_url, env=env) as running:
        yield running


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield client


@dataclass(frozen=True)
class Sender:
    """A device whose requests carry one JSON content type: the edge's or the route's."""

    user_id: str
    token: str
    content_type: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": self.content_type}


EDGE, ROUTE = "application/json", "application/vnd.msgsync+json"

Case = Callable[[httpx.AsyncClient, Sender, str], Awaitable[httpx.Response]]


def _post(
    path_of: Callable[[str], str], body: bytes, content_type: str = "application/json"
) -> Case:
    async def case(client: httpx.AsyncClient, sender: Sender, group_id: str) -> httpx.Response:
        headers = {**sender.headers, "Content-Type": content_type}
        return await client.post(path_of(group_id), content=body, headers=headers)

    return case


def _to(group_id: str) -> str:
    return f"/groups/{group_id}/messages"


async def _retry(client: httpx.AsyncClient, sender: Sender, group_id: str) -> httpx.Response:
    body = {"body": "once", "client_msg_id": "retried"}
    first = await client.post(_to(group_id), json=body, headers=sender.headers)
    assert first.status_code == 201, first.text
    return await client.post(_to(group_id), json=body, headers=sender.headers)


async def _taken(client: httpx.AsyncClient, sender: Sender, group_id: str) -> httpx.Response:
    """client_msg_id_taken: the key is one of the sender's direct messages."""
    peer = await register(client, "peer")
    body = {"to": peer.user_id, "body": "direct", "client_msg_id": "shared"}
    direct = await client.post("/messages", json=body, headers=sender.headers)
    assert direct.status_code == 201, direct.text
    body = {"body": "to the group", "client_msg_id": "shared"}
    return await client.post(_to(group_id), json=body, headers=sender.headers)


async def _over_the_rate(
    client: httpx.AsyncClient, sender: Sender, group_id: str
) -> httpx.Response:
    for i in range(BURST):
        said = await client.post(_to(group_id), json={"body": f"m{i}"}, headers=sender.headers)
        assert said.status_code == 201, said.text
    return await client.post(_to(group_id), json={"body": "over"}, headers=sender.headers)


async def _retry_over_the_rate(
    client: httpx.AsyncClient, sender: Sender, group_id: str
) -> httpx.Response:
    """Over the rate, a retry of a stored message is still its first answer (200)."""
    body = {"body": "kept", "client_msg_id": "kept"}
    first = await client.post(_to(group_id), json=body, headers=sender.headers)
    assert first.status_code == 201, first.text
    for i in range(BURST - 1):
        said = await client.post(_to(group_id), json={"body": f"m{i}"}, headers=sender.headers)
        assert said.status_code == 201, said.text
    return await client.post(_to(group_id), json=body, headers=sender.headers)


async def _not_a_member(client: httpx.AsyncClient, sender: Sender, group_id: str) -> httpx.Response:
    stranger = await register(client, "stranger")
    other = await client.post(
        "/groups", json={"title": "other", "members": []}, headers=stranger.headers
    )
    assert other.status_code == 201, other.text
    return await client.post(
        _to(other.json()["group"]["group_id"]), json={"body": "hi"}, headers=sender.headers
    )


async def _unknown_token(
    client: httpx.AsyncClient, sender: Sender, group_id: str
) -> httpx.Response:
    stranger = Sender(sender.user_id, "not-a-token", sender.content_type)
    return await client.post(_to(group_id), json={"body": "hi"}, headers=stranger.headers)


CASES: dict[str, Case] = {
    "plain": _post(_to, b'{"body": "hi", "client_msg_id": "c-1"}'),
    "no client_msg_id": _post(_to, b'{"body": "hi"}'),
    "a retry": _retry,
    "no such group": _post(lambda g: _to("g-nowhere"), b'{"body": "hi"}'),
    "not a member": _not_a_member,
    "body too large": _post(_to, ('{"body": "' + "€" * 5462 + '"}').encode()),
    "request too large": _post(_to, ('{"body": "' + "x" * 70_000 + '"}').encode()),
    "client_msg_id taken": _taken,
    "over the rate": _over_the_rate,
    "a retry over the rate": _retry_over_the_rate,
    "empty client_msg_id": _post(_to, b'{"body": "hi", "client_msg_id": ""}'),
    "body a number": _post(_to, b'{"body": 5}'),
    "no body": _post(_to, b"{}"),
    "extra field": _post(_to, b'{"body": "hi", "urgent": true}'),
    "not json": _post(_to, b'{"body": '),
    "a NUL in the body": _post(_to, b'{"body": "a\\u0000b"}'),
    "text": _post(_to, b'{"body": "hi"}', "text/plain"),
    "unknown token": _unknown_token,
    "group id too long": _post(lambda g: _to("g" * 65), b'{"body": "hi"}'),
    "group id holding NUL": _post(lambda g: _to("g%00"), b'{"body": "hi"}'),
    "group id empty": _post(lambda g: "/groups//messages", b'{"body": "hi"}'),
    "two segments": _post(lambda g: f"/groups/{g}/x/messages", b'{"body": "hi"}'),
}


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """The answer less what two sends may differ in (a new message's id, time, version)."""
    headers = {k: v for k, v in response.headers.items() if k not in _VARYING}
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict) and "message" in body and response.status_code in {200, 201}:
        assert body["version"] > 0
        body = {**body, "version": "v", "message": {**body["message"]}}
        for key in ("id", "created_at", "group_id", "from"):
            body["message"][key] = key
    # A group's id, in a detail, differs between the two groups of a case.
    body = orjson.loads(_GROUP_ID.sub("G", orjson.dumps(body).decode()))
    return response.status_code, headers, body


async def _answer(
    client: httpx.AsyncClient, case: Case, content_type: str, cached: bool
) -> httpx.Response:
    """The case in a group of its own, sent by a device whose token is cached, or new
    (logged in just now: its first request authenticates it)."""
    owner = await register(client, "owner")
    member = await register(client, "member")
    created = await client.post(
        "/groups", json={"title": "t", "members": [member.user_id]}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    group_id = created.json()["group"]["group_id"]
    device = await login(client, member.user_id, f"device-{uuid.uuid4().hex[:8]}")
    if cached:
        assert (await client.get("/devices", headers=device.headers)).status_code == 200
    response = await case(client, Sender(device.user_id, device.token, content_type), group_id)
    if response.status_code in {200, 201}:
        # Delivered to the other member.
        page = await sync(client, owner, since=0)
        bodies = [e["data"]["body"] for e in page["entries"] if e["kind"] == "message"]
        assert response.json()["message"]["body"] in bodies
    return response


@pytest.mark.parametrize("name", CASES)
async def test_a_group_send_is_answered_alike_by_the_edge_and_the_route(
    http: httpx.AsyncClient, name: str
) -> None:
    case = CASES[name]
    by_route = _comparable(await _answer(http, case, ROUTE, cached=False))
    by_edge_cached = _comparable(await _answer(http, case, EDGE, cached=True))
    by_edge_new = _comparable(await _answer(http, case, EDGE, cached=False))
    assert by_edge_cached == by_route
    assert by_edge_new == by_route
    if by_route[0] not in {200, 201}:
        assert by_route[1]["content-type"] == "application/problem+json", by_route


async def test_a_plain_group_send_from_a_known_device_skips_the_framework(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    created = await client.post(
        "/groups", json={"title": "t", "members": [bob.user_id]}, headers=alice.headers
    )
    group_id = created.json()["group"]["group_id"]
    await set_token_cache(app, client, alice, cached=True)
    make_the_framework_unreachable(app)
    response = await client.post(_to(group_id), json={"body": "hi"}, headers=alice.headers)
    assert response.status_code == 201, response.text
    assert response.json()["message"]["group_id"] == group_id
    app.dependency_overrides.clear()
    page = await sync(client, bob, since=0)
    assert [e["data"]["body"] for e in page["entries"] if e["kind"] == "message"] == ["hi"]
