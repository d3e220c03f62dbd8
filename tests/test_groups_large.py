"""Large groups (DESIGN.md "Groups") through the HTTP API, on PostgreSQL and SQLite, with a
fan-out limit of 3: a group of more than 3 members is large."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert

from app.config import Settings
from app.db.models import User
from tests.conftest import make_settings
from tests.factories import Device, register, sync_all
from tests.group_follower import Follower

LIMIT = 3
MAX = 1010


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, group_fanout_limit=LIMIT, group_max_members=MAX)


async def _create(client: httpx.AsyncClient, owner: Device, members: list[Device]) -> Any:
    response = await client.post(
        "/groups",
        json={"title": "Large", "members": [m.user_id for m in members]},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["group"]


async def _say(client: httpx.AsyncClient, who: Device, group_id: str, text: str) -> Any:
    response = await client.post(
        f"/groups/{group_id}/messages", json={"body": text}, headers=who.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _add(client: httpx.AsyncClient, who: Device, group_id: str, ids: list[str]) -> Any:
    response = await client.post(
        f"/groups/{group_id}/members", json={"user_ids": ids}, headers=who.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["group"]


async def _remove(client: httpx.AsyncClient, who: Device, group_id: str, user_id: str) -> None:
    response = await client.delete(f"/groups/{group_id}/members/{user_id}", headers=who.headers)
    assert response.status_code == 204, response.text


async def _log(client: httpx.AsyncClient, who: Device, group_id: str, **params: Any) -> Any:
    response = await client.get(f"/groups/{group_id}/events", params=params, headers=who.headers)
    assert response.status_code == 200, response.text
    return response.json()


def _news(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in entries if e["kind"] == "group_news"]


async def test_sends_to_a_large_group_are_coalesced_news(client: httpx.AsyncClient) -> None:
    owner, *others = [await register(client, "lg") for _ in range(5)]
    group = await _create(client, owner, others)
    assert group["large"]
    assert group["member_count"] == 5
    group_id = group["group_id"]
    reader, idle = others[0], others[1]
    sent = [await _say(client, owner, group_id, f"m{i}") for i in range(5)]
    # No message entry for anyone; the sender's version is its latest (its news entry).
    owner_stream = await sync_all(client, owner)
    assert [e["kind"] for e in owner_stream] == ["group", "group_news"]
    assert all(s["version"] == owner_stream[-1]["version"] for s in sent)
    # A member who does not read gets exactly one entry for the five sends.
    assert _news(await sync_all(client, idle)) == [{"group_id": group_id, "seq": 2}]

    # Reading the log to its end covers the news: the next send gives a new entry.
    log = await _log(client, reader, group_id)
    assert [e["seq"] for e in log["events"]] == [1, 2, 3, 4, 5, 6]
    assert [e["data"]["body"] for e in log["events"][1:]] == [f"m{i}" for i in range(5)]
    assert not log["has_more"]
    await _say(client, idle, group_id, "again")
    assert _news(await sync_all(client, reader)) == [
        {"group_id": group_id, "seq": 2},
        {"group_id": group_id, "seq": 7},
    ]
    assert len(_news(await sync_all(client, idle))) == 1


async def test_membership_events_reach_the_member_concerned(client: httpx.AsyncClient) -> None:
    owner, *others = [await register(client, "lg") for _ in range(4)]
    group_id = (await _create(client, owner, others))["group_id"]
    newcomer = await register(client, "new")
    await _say(client, owner, group_id, "before")
    grown = await _add(client, owner, group_id, [newcomer.user_id, others[0].user_id])
    assert grown["member_count"] == 5
    assert grown["large"]
    stream = await sync_all(client, newcomer)
    assert [e["kind"] for e in stream] == ["group"]
    assert stream[0]["data"]["event"]["kind"] == "member_added"
    assert stream[0]["data"]["event"]["data"] == {"user_id": newcomer.user_id}
    log = await _log(client, newcomer, group_id)
    assert [e["kind"] for e in log["events"]] == ["member_added"]  # history before: hidden

    leaver = others[1]
    before = await sync_all(client, leaver)
    await _remove(client, leaver, group_id, leaver.user_id)
    after = await sync_all(client, leaver)
    assert len(after) == len(before) + 1
    assert after[-1]["kind"] == "group"
    assert after[-1]["data"]["event"]["kind"] == "member_left"
    # Nothing more for the one who left, and the group is gone for them.
    await _say(client, owner, group_id, "after")
    assert len(await sync_all(client, leaver)) == len(after)
    gone = await client.get(f"/groups/{group_id}/events", headers=leaver.headers)
    assert gone.status_code == 404
    assert gone.json()["code"] == "group_not_found"


async def test_switching_modes_loses_and_repeats_nothing(client: httpx.AsyncClient) -> None:
    """Small (3) -> large (5) -> small (3) -> large (5), events all along, with recall,
    title and role changes: each member sees every event from its joining, once, in seq
    order, whether it follows as events happen or only at the end."""
    a, b, c, d, e = [await register(client, "sw") for _ in range(5)]
    group = await _create(client, a, [b, c])
    assert not group["large"]
    group_id = group["group_id"]
    live = Follower(client, b)
    late = Follower(client, c)
    await _say(client, b, group_id, "small 1")
    await live.catch_up()
    grown = await _add(client, a, group_id, [d.user_id, e.user_id])
    assert grown["large"]
    said = await _say(client, c, group_id, "large 1")
    await client.patch(f"/groups/{group_id}", json={"title": "Renamed"}, headers=a.headers)
    await live.catch_up()
    recalled = await client.post(f"/messages/{said['message']['id']}/recall", headers=c.headers)
    assert recalled.status_code == 200, recalled.text
    await _remove(client, a, group_id, d.user_id)
    await _say(client, e, group_id, "still large")
    await _remove(client, e, group_id, e.user_id)  # back to 3: small
    shrunk = (await client.get(f"/groups/{group_id}", headers=a.headers)).json()["group"]
    assert not shrunk["large"]
    await _say(client, a, group_id, "small again")
    role = await client.patch(
        f"/groups/{group_id}/members/{b.user_id}", json={"role": "admin"}, headers=a.headers
    )
    assert role.status_code == 200
    await live.catch_up()
    f = await register(client, "sw")
    back = await _add(client, a, group_id, [d.user_id, f.user_id])  # 5: large again
    joined = back["latest_seq"] - 1 if f.user_id < d.user_id else back["latest_seq"]
    newcomer = Follower(client, f)
    await newcomer.catch_up()  # joined: it has every event up to its own member_added
    await _say(client, d, group_id, "large 2")
    await _say(client, b, group_id, "large 3")
    latest = (await client.get(f"/groups/{group_id}", headers=a.headers)).json()["group"]
    assert latest["large"]
    await newcomer.catch_up()
    assert newcomer.seen[group_id] == list(range(joined, latest["latest_seq"] + 1))
    for follower in (live, late, Follower(client, a)):
        await follower.catch_up()
        assert follower.seen[group_id] == list(range(1, latest["latest_seq"] + 1))
        # Reads start from the device's position: no event is read from the log twice.
        reads = follower.read[group_id]
        assert len(reads) == len(set(reads))


async def test_group_too_large_and_bulk_add(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await register(client, "bulk")
    group_id = (await _create(client, owner, []))["group_id"]
    ids = [f"bulk-{uuid.uuid4().hex[:12]}" for _ in range(MAX)]
    async with app.state.store.db.session() as session, session.begin():
        await session.execute(insert(User), [{"user_id": u, "password_hash": "-"} for u in ids])
    grown = await _add(client, owner, group_id, ids[:1000])
    assert grown["member_count"] == 1001
    assert grown["large"]
    assert grown["latest_seq"] == 1001
    # Members already in are ignored; beyond MSGSYNC_GROUP_MAX_MEMBERS: 409, nothing added.
    again = await _add(client, owner, group_id, ids[:5])
    assert again["member_count"] == 1001
    too_many = await client.post(
        f"/groups/{group_id}/members", json={"user_ids": ids[990:]}, headers=owner.headers
    )
    assert too_many.status_code == 409
    assert too_many.json()["code"] == "group_too_large"
    pages, after = 0, None
    listed: list[str] = []
    while True:
        params: dict[str, Any] = {"limit": 400}
        if after is not None:
            params["after"] = after
        page = await client.get(f"/groups/{group_id}/members", params=params, headers=owner.headers)
        assert page.status_code == 200
        listed += [m["user_id"] for m in page.json()["members"]]
        pages += 1
        after = page.json()["next_after"]
        if after is None:
            break
    assert pages == 3
    assert sorted(listed) == sorted([owner.user_id, *ids[:1000]])
    # Each added holds news from the batch's next event, but the last one added: a send
    # writes one entry (the owner holds news from the batch's first event).
    sent = await _say(client, owner, group_id, "to a thousand")
    owner_news = _news(await sync_all(client, owner))
    assert owner_news == [{"group_id": group_id, "seq": 2}]
    assert sent["version"] == 2  # created, then the batch's news: nothing for the send
    too_big = await client.post(
        "/groups", json={"title": "T", "members": ids[:MAX]}, headers=owner.headers
    )
    assert too_big.status_code == 409
    assert too_big.json()["code"] == "group_too_large"
