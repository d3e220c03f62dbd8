"""Hostile input is a 422 problem naming the field, never a 5xx.

PostgreSQL cannot store NUL in text, and neither database driver can encode a lone UTF-16
surrogate, so both must be refused before any statement runs (on PostgreSQL, the stricter
of the two, a statement that ran would fail, and a 5xx would show it); integers must fit a BIGINT;
and a JSON `true` is not a version. Sends and acks are checked with a token the process has
cached (the lean path of app.edge.hotpaths) and without (the framework), which must agree.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.factories import PASSWORD, Device, register, send, set_token_cache
from tests.test_accounts import assert_problem

# HTTP-layer behaviour: PostgreSQL alone (tests/store/ holds the storage contract on both).
pytestmark = pytest.mark.one_backend

BIGINT_MAX = 2**63 - 1
HOSTILE = {
    "nul": "a\\u0000b",
    "high surrogate": "a\\ud800b",
    "low surrogate": "\\udc00",
    "reversed pair": "\\udc00\\ud800",
}


def raw_json(template: dict[str, Any], field: str, escaped: str) -> bytes:
    """`template` as JSON with `field` set to a string holding `escaped` (a JSON escape such
    as \\u0000), written by hand: a JSON encoder refuses lone surrogates."""
    text = json.dumps({**template, field: "@@"})
    return text.replace('"@@"', f'"{escaped}"').encode()


def assert_names_field(response: httpx.Response, *loc: str | int) -> None:
    assert_problem(response, 422, "validation_error")
    body = response.json()
    assert [e["loc"] for e in body["errors"]] == [list(loc)], body
    assert body["detail"].startswith(".".join(map(str, loc)) + ":"), body


async def _pair(client: httpx.AsyncClient) -> tuple[Device, Device]:
    return await register(client, "alice"), await register(client, "bob")


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("field", ["user_id", "password", "device_name"])
async def test_login_strings(client: httpx.AsyncClient, field: str, kind: str) -> None:
    user = await register(client)
    template = {"user_id": user.user_id, "password": PASSWORD, "device_name": "phone"}
    response = await client.post(
        "/login",
        content=raw_json(template, field, HOSTILE[kind]),
        headers={"Content-Type": "application/json"},
    )
    assert_names_field(response, "body", field)


@pytest.mark.parametrize("kind", HOSTILE)
async def test_registration_password(client: httpx.AsyncClient, kind: str) -> None:
    template = {"user_id": "someone-new", "password": PASSWORD}
    response = await client.post(
        "/users",
        content=raw_json(template, "password", "long enough " + HOSTILE[kind]),
        headers={"Content-Type": "application/json"},
    )
    assert_names_field(response, "body", "password")


@pytest.mark.parametrize("cached", [False, True], ids=["framework", "cached token"])
@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("field", ["to", "body", "client_msg_id"])
async def test_send_strings(
    app: FastAPI, client: httpx.AsyncClient, field: str, kind: str, cached: bool
) -> None:
    alice, bob = await _pair(client)
    await set_token_cache(app, client, alice, cached)
    template = {"to": bob.user_id, "body": "hi", "client_msg_id": "c-1"}
    response = await client.post(
        "/messages",
        content=raw_json(template, field, HOSTILE[kind]),
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert_names_field(response, "body", field)
    # Nothing was stored: bob's inbox is empty.
    page = await client.get("/sync", params={"since": 0}, headers=bob.headers)
    assert page.json()["entries"] == []


# A path is percent-encoded UTF-8, which cannot carry a surrogate: the NUL is the threat
# there. Bytes that are not UTF-8 arrive as U+FFFD, an ordinary (unknown) peer.
@pytest.mark.parametrize(("peer", "refused"), [("a%00b", True), ("a%ED%A0%80b", False)])
@pytest.mark.parametrize("route", ["messages", "read"])
async def test_peer_in_the_path(
    client: httpx.AsyncClient, route: str, peer: str, refused: bool
) -> None:
    alice, bob = await _pair(client)
    sent = await send(client, alice, bob.user_id, "hi")
    if route == "messages":
        response = await client.get(f"/conversations/{peer}/messages", headers=alice.headers)
    else:
        response = await client.post(
            f"/conversations/{peer}/read",
            json={"up_to_message_id": sent["message"]["id"]},
            headers=alice.headers,
        )
    if refused:
        assert_names_field(response, "path", "peer")
    else:
        assert response.status_code in {200, 404}, response.text


async def test_a_hostile_key_is_named_safely(client: httpx.AsyncClient) -> None:
    """An unknown key holding a surrogate is echoed in the problem, which must still encode."""
    response = await client.post(
        "/login",
        content=b'{"user_id": "a", "password": "12345678", "\\ud800": 1}',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 422, "validation_error")
    assert response.json()["errors"][0]["loc"][0] == "body"


async def test_a_body_that_is_not_utf8(client: httpx.AsyncClient) -> None:
    user = await register(client)
    response = await client.post(
        "/messages",
        content=b'{"to": "' + user.user_id.encode() + b'", "body": "\xff\xfe"}',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert response.status_code in {400, 422}, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("value", [BIGINT_MAX + 1, 2**64, 10**30])
@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/conversations", "before"),
        ("/conversations/PEER/messages", "before_id"),
        ("/sync", "since"),
        ("/sync", "limit"),
        ("/conversations", "limit"),
    ],
)
async def test_query_integers_fit_a_bigint(
    client: httpx.AsyncClient, path: str, param: str, value: int
) -> None:
    alice, bob = await _pair(client)
    await send(client, alice, bob.user_id, "hi")
    response = await client.get(
        path.replace("PEER", bob.user_id), params={param: str(value)}, headers=alice.headers
    )
    assert_names_field(response, "query", param)


async def test_query_integers_at_the_bigint_maximum_are_accepted(
    client: httpx.AsyncClient,
) -> None:
    alice, bob = await _pair(client)
    sent = await send(client, alice, bob.user_id, "hi")
    page = await client.get("/conversations", params={"before": BIGINT_MAX}, headers=alice.headers)
    assert page.status_code == 200, page.text
    assert [c["last_message"]["id"] for c in page.json()["conversations"]] == [
        sent["message"]["id"]
    ]
    history = await client.get(
        f"/conversations/{bob.user_id}/messages",
        params={"before_id": BIGINT_MAX},
        headers=alice.headers,
    )
    assert history.status_code == 200, history.text
    assert [m["body"] for m in history.json()["messages"]] == ["hi"]


@pytest.mark.parametrize("timeout", ["inf", "nan", "-1", "1e400"])
async def test_a_timeout_is_a_finite_number(client: httpx.AsyncClient, timeout: str) -> None:
    alice, _ = await _pair(client)
    response = await client.get(
        "/sync", params={"since": 0, "timeout": timeout}, headers=alice.headers
    )
    assert_names_field(response, "query", "timeout")


async def test_path_and_body_integers_fit_a_bigint(client: httpx.AsyncClient) -> None:
    alice, bob = await _pair(client)
    await send(client, alice, bob.user_id, "hi")
    recall = await client.post(f"/messages/{BIGINT_MAX + 1}/recall", headers=alice.headers)
    assert_names_field(recall, "path", "message_id")
    read = await client.post(
        f"/conversations/{bob.user_id}/read",
        json={"up_to_message_id": BIGINT_MAX + 1},
        headers=alice.headers,
    )
    assert_names_field(read, "body", "up_to_message_id")


@pytest.mark.parametrize("cached", [False, True], ids=["framework", "cached token"])
@pytest.mark.parametrize("raw", ["true", "false", '"1"', "1.5", str(BIGINT_MAX + 1), "-1", "null"])
async def test_an_ack_version_is_a_json_integer(
    app: FastAPI, client: httpx.AsyncClient, raw: str, cached: bool
) -> None:
    alice, bob = await _pair(client)
    await send(client, alice, bob.user_id, "hi")
    await set_token_cache(app, client, bob, cached)
    response = await client.post(
        "/ack",
        content=b'{"version": ' + raw.encode() + b"}",
        headers={**bob.headers, "Content-Type": "application/json"},
    )
    assert_names_field(response, "body", "version")
    devices = await client.get("/devices", headers=bob.headers)
    assert [d["acked_version"] for d in devices.json()["devices"]] == [0]


@pytest.mark.parametrize("raw", ["true", '"1"', "1.5"])
async def test_a_read_cursor_is_a_json_integer(client: httpx.AsyncClient, raw: str) -> None:
    alice, bob = await _pair(client)
    await send(client, alice, bob.user_id, "hi")
    response = await client.post(
        f"/conversations/{alice.user_id}/read",
        content=b'{"up_to_message_id": ' + raw.encode() + b"}",
        headers={**bob.headers, "Content-Type": "application/json"},
    )
    assert_names_field(response, "body", "up_to_message_id")


@pytest.mark.parametrize("cached", [False, True], ids=["framework", "cached token"])
async def test_an_integral_number_is_an_integer(
    app: FastAPI, client: httpx.AsyncClient, cached: bool
) -> None:
    """JSON Schema's integer, which the OpenAPI document states, includes 1.0."""
    alice, bob = await _pair(client)
    await send(client, alice, bob.user_id, "hi")
    await set_token_cache(app, client, bob, cached)
    response = await client.post(
        "/ack",
        content=b'{"version": 1.0}',
        headers={**bob.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["acked_version"] == 1


async def test_an_ordinary_text_is_still_accepted(client: httpx.AsyncClient) -> None:
    """The guard refuses NUL and lone surrogates only: other control characters, astral
    characters (a surrogate *pair* in JSON) and RTL text go through unchanged."""
    alice, bob = await _pair(client)
    body = "tab\there \x01\x1f 😀 \u202e\u05e9\u05dc\u05d5\u05dd"
    response = await client.post(
        "/messages",
        content=b'{"to": "' + bob.user_id.encode() + b'", "body": "tab\\there \\u0001\\u001f '
        b'\\ud83d\\ude00 \\u202e\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d"}',
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["message"]["body"] == body
    page = await client.get("/sync", params={"since": 0}, headers=bob.headers)
    assert [e["data"]["body"] for e in page.json()["entries"]] == [body]
