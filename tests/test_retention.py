"""The retention job and the sync fallback to the index table, on both databases."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, insert, select

from app.config import Settings
from app.db.engine import Database
from app.db.models import Base, InboxEntry, User
from app.inbox.retention import prune
from app.inbox.sync import bump_versions
from tests.conftest import make_settings, module_database
from tests.factories import Device, register, send, send_many, sync, sync_all

WEEK = timedelta(days=7)


@pytest.fixture(scope="module")
def store_url(database_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of the same kind for this module alone: retention prunes every user."""
    with module_database(database_url, request, "retention") as url:
        yield url


@pytest.fixture
def settings(store_url: str) -> Settings:
    return make_settings(store_url)


@pytest.fixture
async def db(app: FastAPI) -> Database:
    """The app's database, emptied: reports count every user, so each test starts bare."""
    database: Database = app.state.db
    async with database.session() as session, session.begin():
        for table in reversed(Base.metadata.sorted_tables):
            await session.execute(delete(table))
    return database


async def inbox_versions(db: Database, user_id: str) -> list[int]:
    async with db.read_sessions() as session:
        rows = await session.scalars(
            select(InboxEntry.version)
            .where(InboxEntry.user_id == user_id)
            .order_by(InboxEntry.version)
        )
        return list(rows)


async def floor_of(db: Database, user_id: str) -> int:
    async with db.read_sessions() as session:
        floor = await session.scalar(select(User.floor_version).where(User.user_id == user_id))
    assert floor is not None
    return floor


async def sync_pages(
    client: httpx.AsyncClient, device: Device, since: int, limit: int
) -> list[dict[str, Any]]:
    pages = []
    while True:
        page = await sync(client, device, since=since, limit=limit)
        pages.append({"since": since, **page})
        since = page["next_since"]
        if not page["has_more"]:
            return pages


async def test_count_cap_keeps_the_newest_and_sync_still_yields_everything(
    client: httpx.AsyncClient, db: Database
) -> None:
    # A tenth of the default cap (1,000) and of the messages: the same cuts, pages and
    # fallback, for a tenth of the sends.
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    sent = await send_many(db, alice.user_id, bob.user_id, 150)

    report = await prune(db, WEEK, 100)

    assert (report.users_touched, report.deleted_by_age, report.deleted_by_count) == (2, 0, 100)
    for user in (alice, bob):
        assert await inbox_versions(db, user.user_id) == list(range(51, 151))
        assert await floor_of(db, user.user_id) == 50
    # A device that last synced before the floor still receives every message once, in order.
    pages = await sync_pages(client, bob, since=0, limit=10)
    entries = [e for page in pages for e in page["entries"]]
    assert [e["version"] for e in entries] == list(range(1, 151))
    assert [e["data"] for e in entries] == sent
    assert {e["kind"] for e in entries} == {"message"}
    assert [p["history_fallback"] for p in pages] == [p["since"] < 50 for p in pages]
    assert pages[0]["history_fallback"] is True
    assert pages[-1]["history_fallback"] is False
    # A second run finds nothing to do.
    again = await prune(db, WEEK, 100)
    assert (again.users_touched, again.deleted) == (0, 0)


async def test_age_cut_with_a_fixed_clock(client: httpx.AsyncClient, db: Database) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    sent = [(await send(client, alice, bob.user_id, f"m{i}"))["message"] for i in range(5)]
    created = [datetime.fromisoformat(m["created_at"]) for m in sent]
    assert created[2] < created[3]
    # The clock stands a week after the fourth message: the first three are older than that.
    now = created[3] + WEEK

    report = await prune(db, WEEK, 1000, now=now)

    assert (report.users_touched, report.deleted_by_age, report.deleted_by_count) == (2, 6, 0)
    assert await inbox_versions(db, bob.user_id) == [4, 5]
    assert await floor_of(db, bob.user_id) == 3
    page = await sync(client, bob, since=0)
    assert [e["data"] for e in page["entries"]] == sent
    assert page["history_fallback"] is True
    # Age and count together: the count cut (5 - 1) lies above the age cut (3).
    both = await prune(db, WEEK, 1, now=now)
    assert (both.deleted_by_age, both.deleted_by_count) == (0, 2)
    assert await inbox_versions(db, bob.user_id) == [5]


async def test_split_between_age_and_count_in_one_run(
    client: httpx.AsyncClient, db: Database
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    sent = [(await send(client, alice, bob.user_id, f"m{i}"))["message"] for i in range(6)]
    now = datetime.fromisoformat(sent[2]["created_at"]) + WEEK  # two entries are old

    report = await prune(db, WEEK, 1, now=now)

    # Per user: versions 1-2 go for their age, 3-5 for the count; 6 stays.
    assert (report.deleted_by_age, report.deleted_by_count) == (4, 6)
    assert await inbox_versions(db, bob.user_id) == [6]
    assert await floor_of(db, alice.user_id) == 5


async def test_dry_run_counts_and_deletes_nothing(client: httpx.AsyncClient, db: Database) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    for i in range(12):
        await send(client, alice, bob.user_id, f"m{i}")

    dry = await prune(db, WEEK, 10, dry_run=True)

    assert dry.dry_run is True
    assert (dry.users_touched, dry.deleted_by_age, dry.deleted_by_count) == (2, 0, 4)
    assert await inbox_versions(db, bob.user_id) == list(range(1, 13))
    assert await floor_of(db, bob.user_id) == 0
    real = await prune(db, WEEK, 10)
    assert (real.users_touched, real.deleted_by_count) == (dry.users_touched, dry.deleted_by_count)


async def test_small_batches_give_the_result_of_one_big_one(
    client: httpx.AsyncClient, db: Database
) -> None:
    alice = await register(client, "alice")
    peers = [await register(client, "peer") for _ in range(3)]
    for peer in peers:
        for i in range(10):
            await send(client, alice, peer.user_id, f"m{i}")

    # Two users and at most three entries per transaction: alice's backlog spans several.
    report = await prune(db, WEEK, 2, batch_users=2, batch_entries=3)

    assert report.users_touched == 4
    assert report.deleted_by_count == 28 + 3 * 8
    assert report.transactions >= (28 + 3 * 8) // 3
    assert await inbox_versions(db, alice.user_id) == [29, 30]
    for peer in peers:
        assert await inbox_versions(db, peer.user_id) == [9, 10]
        assert await floor_of(db, peer.user_id) == 8


async def _add_read_entry(db: Database, user_id: str) -> int:
    """An operation entry (the read-receipt endpoint lands separately): inbox only."""
    async with db.session() as session, session.begin():
        version = (await bump_versions(db, session, [user_id]))[user_id]
        await session.execute(
            insert(InboxEntry).values(
                user_id=user_id,
                version=version,
                kind="read",
                created_at=datetime.now().astimezone(),
                message_id=None,
                data=json.dumps({"reader": user_id, "peer": "x", "up_to_message_id": 1}),
            )
        )
    return version


async def test_pruned_operation_entries_are_skipped_and_the_cursor_reaches_the_floor(
    client: httpx.AsyncClient, db: Database
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    await send(client, alice, bob.user_id, "one")  # bob: 1
    await send(client, alice, bob.user_id, "two")  # bob: 2
    assert await _add_read_entry(db, bob.user_id) == 3
    await send(client, alice, bob.user_id, "four")  # bob: 4
    await prune(db, WEEK, 1)
    assert await floor_of(db, bob.user_id) == 3

    # Messages come back from the index table; the read entry's effect lives on elsewhere.
    entries = await sync_all(client, bob, since=0, limit=10)
    assert [(e["version"], e["data"]["body"]) for e in entries] == [
        (1, "one"),
        (2, "two"),
        (4, "four"),
    ]
    first = await sync(client, bob, since=0, limit=2)
    assert (first["next_since"], first["has_more"], first["history_fallback"]) == (2, True, True)
    rest = await sync(client, bob, since=2, limit=2)
    assert [e["version"] for e in rest["entries"]] == [4]
    assert (rest["next_since"], rest["has_more"], rest["history_fallback"]) == (4, False, True)

    # When the pruned range held only operation entries, the cursor moves up to the floor.
    assert await _add_read_entry(db, bob.user_id) == 5
    await prune(db, WEEK, 0)
    assert await floor_of(db, bob.user_id) == 5
    only_ops = await sync(client, bob, since=4)
    assert (only_ops["entries"], only_ops["next_since"]) == ([], 5)
    assert (only_ops["has_more"], only_ops["history_fallback"]) == (False, True)


async def test_history_fallback_covers_both_sides_and_notes_to_oneself(
    client: httpx.AsyncClient, db: Database
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    expected = [
        (await send(client, alice, bob.user_id, "to bob"))["message"],
        (await send(client, bob, alice.user_id, "to alice"))["message"],
        (await send(client, bob, bob.user_id, "to myself"))["message"],
        (await send(client, alice, bob.user_id, "latest"))["message"],
    ]
    await prune(db, WEEK, 1)
    page = await sync(client, bob, since=0)
    assert [e["version"] for e in page["entries"]] == [1, 2, 3, 4]
    assert [e["data"] for e in page["entries"]] == expected
    assert page["history_fallback"] is True


async def run_cli(url: str, *args: str) -> dict[str, Any]:
    """`msgsync retention --json` in its own process; it must exit 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "retention",
        "--json",
        *args,
        env={**os.environ, "MSGSYNC_DATABASE_URL": url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_cli_prints_one_json_object(
    client: httpx.AsyncClient, db: Database, store_url: str
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    for i in range(4):
        await send(client, alice, bob.user_id, f"m{i}")
    done = await run_cli(store_url, "--max-entries", "1", "--max-age", "30d")
    assert done["already_running"] is False
    assert (done["deleted"], done["deleted_by_count"], done["max_age_seconds"]) == (
        6,
        6,
        30 * 86400,
    )
    assert await inbox_versions(db, bob.user_id) == [4]


async def test_cli_bounds_the_entries_deleted_per_transaction(
    client: httpx.AsyncClient, db: Database, store_url: str
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    for i in range(5):
        await send(client, alice, bob.user_id, f"m{i}")
    done = await run_cli(store_url, "--max-entries", "1", "--batch-entries", "2")
    # 4 entries of alice's and 4 of bob's, at most 2 per transaction.
    assert done["deleted"] == 8
    assert done["transactions"] >= 4
    assert await inbox_versions(db, bob.user_id) == [5]
