"""Send, sync and ack on both databases, through the HTTP API."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from tests.factories import (
    login,
    make_the_framework_unreachable,
    register,
    send,
    set_token_cache,
    sync,
    sync_all,
)
from tests.test_accounts import assert_problem


async def test_send_reaches_both_parties_with_their_own_versions(
    client: httpx.AsyncClient,
) -> None:
    alice = await register(client)
    bob = await register(client)
    await send(client, bob, bob.user_id, "note to self")  # bob: version 1
    sent = await send(client, alice, bob.user_id, "hello bob")
    assert sent["version"] == 1  # alice's first change
    message = sent["message"]
    assert message["from"] == alice.user_id
    assert message["to"] == bob.user_id
    assert message["body"] == "hello bob"
    assert message["recalled_at"] is None
    assert message["created_at"].endswith("Z")

    bob_page = await sync(client, bob, since=1)
    assert [e["version"] for e in bob_page["entries"]] == [2]
    assert bob_page["entries"][0]["kind"] == "message"
    assert bob_page["entries"][0]["data"] == message
    assert bob_page["next_since"] == 2
    assert bob_page["latest_version"] == 2
    assert bob_page["has_more"] is False
    assert bob_page["history_fallback"] is False

    # The sender's other devices learn of the message from the sender's own entry.
    alice_laptop = await login(client, alice.user_id, name="laptop")
    alice_page = await sync(client, alice_laptop, since=0)
    assert [e["data"]["id"] for e in alice_page["entries"]] == [message["id"]]


async def test_message_to_oneself_takes_one_version(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    first = await send(client, alice, alice.user_id, "one")
    second = await send(client, alice, alice.user_id, "two")
    assert (first["version"], second["version"]) == (1, 2)
    page = await sync(client, alice, since=0)
    assert [e["data"]["body"] for e in page["entries"]] == ["one", "two"]


async def test_retry_with_the_same_client_msg_id_returns_the_first_result(
    client: httpx.AsyncClient,
) -> None:
    alice = await register(client)
    bob = await register(client)
    body = {"to": bob.user_id, "body": "once", "client_msg_id": "c-1"}
    first = await client.post("/messages", json=body, headers=alice.headers)
    again = await client.post("/messages", json=body, headers=alice.headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    page = await sync(client, bob, since=0)
    assert len(page["entries"]) == 1
    assert page["latest_version"] == 1


async def test_concurrent_duplicates_store_one_message(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    body = {"to": bob.user_id, "body": "racing", "client_msg_id": "same"}
    responses = await asyncio.gather(
        *(client.post("/messages", json=body, headers=alice.headers) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses).count(201) == 1
    assert {r.status_code for r in responses} <= {200, 201}
    assert len({r.json()["message"]["id"] for r in responses}) == 1
    page = await sync(client, bob, since=0)
    assert len(page["entries"]) == 1
    assert page["latest_version"] == 1


async def test_unknown_recipient(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    response = await client.post(
        "/messages", json={"to": "nobody-here", "body": "x"}, headers=alice.headers
    )
    assert_problem(response, 404, "recipient_not_found")
    assert (await sync(client, alice, since=0))["latest_version"] == 0


async def test_body_limits(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    # 16 KiB of UTF-8: 5462 three-byte characters are 16386 bytes.
    too_big = await client.post(
        "/messages", json={"to": bob.user_id, "body": "€" * 5462}, headers=alice.headers
    )
    assert_problem(too_big, 413, "body_too_large")
    just_fits = await client.post(
        "/messages", json={"to": bob.user_id, "body": "€" * 5461}, headers=alice.headers
    )
    assert just_fits.status_code == 201
    huge = await client.post(
        "/messages", json={"to": bob.user_id, "body": "x" * 70_000}, headers=alice.headers
    )
    assert_problem(huge, 413, "request_too_large")
    assert (await sync(client, bob, since=0))["latest_version"] == 1


async def test_paging_follows_next_since_and_has_more(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    for i in range(7):
        await send(client, alice, bob.user_id, f"m{i}")
    page = await sync(client, bob, since=0, limit=3)
    assert [e["version"] for e in page["entries"]] == [1, 2, 3]
    assert (page["next_since"], page["has_more"], page["latest_version"]) == (3, True, 7)
    entries = await sync_all(client, bob, since=0, limit=3)
    assert [e["data"]["body"] for e in entries] == [f"m{i}" for i in range(7)]
    empty = await sync(client, bob, since=7)
    assert (empty["entries"], empty["next_since"], empty["has_more"]) == ([], 7, False)


async def test_sync_rejects_bad_parameters(client: httpx.AsyncClient) -> None:
    bob = await register(client)
    ahead = await client.get("/sync", params={"since": 5}, headers=bob.headers)
    assert_problem(ahead, 409, "since_ahead")
    assert ahead.json()["latest_version"] == 0
    for params in ({"limit": 0}, {"limit": 1001}, {"since": -1}, {"timeout": -1}):
        response = await client.get("/sync", params=params, headers=bob.headers)
        assert response.status_code == 422, params
        assert response.json()["code"] in {"validation_error", "limit_out_of_range"}


async def test_ack_is_cumulative_and_drives_sync_without_since(
    client: httpx.AsyncClient,
) -> None:
    alice = await register(client)
    bob = await register(client)
    for i in range(5):
        await send(client, alice, bob.user_id, f"m{i}")
    acked = await client.post("/ack", json={"version": 3}, headers=bob.headers)
    assert acked.json() == {"device_id": bob.device_id, "acked_version": 3}
    back = await client.post("/ack", json={"version": 1}, headers=bob.headers)
    assert back.json()["acked_version"] == 3
    page = await sync(client, bob)
    assert [e["version"] for e in page["entries"]] == [4, 5]
    ahead = await client.post("/ack", json={"version": 6}, headers=bob.headers)
    assert_problem(ahead, 409, "ack_ahead")
    # The cursor belongs to the device: another device of bob starts from 0.
    tablet = await login(client, bob.user_id, name="tablet")
    assert len((await sync(client, tablet))["entries"]) == 5
    devices = (await client.get("/devices", headers=bob.headers)).json()["devices"]
    assert {d["device_id"]: d["acked_version"] for d in devices} == {
        bob.device_id: 3,
        tablet.device_id: 0,
    }


async def test_no_one_reads_another_users_inbox(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    carol = await register(client)
    await send(client, alice, bob.user_id, "for bob only")
    page = await sync(client, carol, since=0)
    assert page["entries"] == []
    assert page["latest_version"] == 0
    # An ack moves only the caller's own device cursor.
    await client.post("/ack", json={"version": 1}, headers=bob.headers)
    devices = (await client.get("/devices", headers=alice.headers)).json()["devices"]
    assert [d["acked_version"] for d in devices] == [0]


async def test_malformed_json_is_a_problem(client: httpx.AsyncClient) -> None:
    alice = await register(client)
    response = await client.post(
        "/messages",
        content=b"{not json",
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert_problem(response, 422, "validation_error")
    extra = await client.post(
        "/messages", json={"to": "x", "body": "y", "surprise": 1}, headers=alice.headers
    )
    assert_problem(extra, 422, "validation_error")


# Send bodies, plain or not. The lean path (app.edge.hotpaths) takes the plain ones when the
# token is cached; the application answers the rest. PEER and CID are filled in per request.
_SEND_BODIES: list[tuple[str, str, str]] = [
    ("plain", '{"to": "PEER", "body": "hi", "client_msg_id": "CID"}', "application/json"),
    ("no client_msg_id", '{"to": "PEER", "body": "hi"}', "application/json"),
    ("to oneself", '{"to": "SELF", "body": "note", "client_msg_id": "CID"}', "application/json"),
    ("a retry", '{"to": "PEER", "body": "hi", "client_msg_id": "first"}', "application/json"),
    ("unknown recipient", '{"to": "nobody-here", "body": "hi"}', "application/json"),
    ("body too large", '{"to": "PEER", "body": "' + "€" * 5462 + '"}', "application/json"),
    ("request too large", '{"to": "PEER", "body": "' + "x" * 70_000 + '"}', "application/json"),
    ("recipient too long", '{"to": "' + "p" * 65 + '", "body": "hi"}', "application/json"),
    (
        "empty client_msg_id",
        '{"to": "PEER", "body": "hi", "client_msg_id": ""}',
        "application/json",
    ),
    ("body a number", '{"to": "PEER", "body": 5}', "application/json"),
    ("no body", '{"to": "PEER"}', "application/json"),
    ("extra field", '{"to": "PEER", "body": "hi", "urgent": true}', "application/json"),
    ("not json", '{"to": "PEER", "body": ', "application/json"),
    ("text", '{"to": "PEER", "body": "hi"}', "text/plain"),
]


@pytest.mark.parametrize(
    ("template", "content_type"),
    [case[1:] for case in _SEND_BODIES],
    ids=[case[0] for case in _SEND_BODIES],
)
async def test_a_send_is_answered_alike_whether_its_token_is_cached_or_not(
    app: FastAPI, client: httpx.AsyncClient, template: str, content_type: str
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    await send(client, alice, bob.user_id, "hi", client_msg_id="first")
    headers = {**alice.headers, "Content-Type": content_type}
    answers = []
    for cached in (False, True):
        await set_token_cache(app, client, alice, cached)
        body = template.replace("PEER", bob.user_id).replace("SELF", alice.user_id)
        body = body.replace("CID", f"c-{cached}")
        response = await client.post("/messages", content=body.encode(), headers=headers)
        answer = response.json()
        if response.status_code == 201:
            # Two new messages: alike but for their id, time, client_msg_id and version.
            assert answer["version"] > 0
            del answer["version"]
            for key in ("id", "created_at", "client_msg_id"):
                del answer["message"][key]
        answers.append((response.status_code, response.headers["content-type"], answer))
    assert answers[0] == answers[1]
    assert answers[0][0] in {201, 200} or answers[0][1] == "application/problem+json"


async def test_a_plain_send_from_a_known_device_skips_the_framework(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    await set_token_cache(app, client, alice, cached=True)
    make_the_framework_unreachable(app)
    response = await client.post(
        "/messages", json={"to": bob.user_id, "body": "hi"}, headers=alice.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["message"]["from"] == alice.user_id
    app.dependency_overrides.clear()
    page = await sync(client, bob, since=0)
    assert [e["data"]["body"] for e in page["entries"]] == ["hi"]
