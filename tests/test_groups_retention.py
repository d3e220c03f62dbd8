"""A pruned stream leads to the group logs: below the floor, the page that reaches the end
of the pruned range names each of the user's groups in a `group_news` entry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from app.config import Settings
from app.db.engine import Database
from app.inbox.retention import prune
from tests.conftest import make_settings, module_database
from tests.factories import register, send, sync_all

WEEK = timedelta(days=7)


@pytest.fixture(scope="module")
def store_url(
    database_url: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database of this module's own: retention prunes every user."""
    with module_database(database_url, request, tmp_path_factory, "groups_retention") as url:
        yield url


@pytest.fixture
def settings(store_url: str) -> Settings:
    return make_settings(store_url)


async def test_below_the_floor_every_group_of_the_user_is_news(
    client: httpx.AsyncClient, app: object
) -> None:
    alice, bob, loner = [await register(client, p) for p in ("alice", "bob", "loner")]
    created = await client.post(
        "/groups", json={"title": "T", "members": [bob.user_id]}, headers=alice.headers
    )
    group_id = created.json()["group"]["group_id"]
    for i in range(5):
        response = await client.post(
            f"/groups/{group_id}/messages", json={"body": f"g{i}"}, headers=alice.headers
        )
        assert response.status_code == 201
    direct = [await send(client, alice, bob.user_id, f"d{i}") for i in range(3)]
    await send(client, alice, loner.user_id, "hello loner")
    await send(client, alice, loner.user_id, "again")
    db: Database = app.state.db  # type: ignore[attr-defined]
    await prune(db, WEEK, 2)  # keep each user's newest two entries

    entries = await sync_all(client, bob, limit=3)
    news = [e for e in entries if e["kind"] == "group_news"]
    assert [n["data"] for n in news] == [{"group_id": group_id, "seq": 6}]
    versions = [e["version"] for e in entries]
    assert versions == sorted(versions)
    # Direct messages come back from the index table; group messages through the log.
    ids = [e["data"]["id"] for e in entries if e["kind"] == "message"]
    assert [d["message"]["id"] for d in direct] == [
        i for i in ids if i in {d["message"]["id"] for d in direct}
    ]
    assert not [e for e in entries if e["kind"] == "message" and e["data"]["group_id"]]
    log = await client.get(f"/groups/{group_id}/events", headers=bob.headers)
    bodies = [e["data"]["body"] for e in log.json()["events"] if e["kind"] == "message"]
    assert bodies == [f"g{i}" for i in range(5)]
    # A user in no group gets no news.
    assert not [e for e in await sync_all(client, loner) if e["kind"] == "group_news"]
