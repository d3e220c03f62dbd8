"""Retention on PostgreSQL while clients send and sync, and two retention runs at once."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from app.db.engine import Database
from app.db.models import InboxEntry, User
from app.inbox.retention import PruneReport, prune
from app.store import open_database
from app.store.postgresql.retention import LOCK_KEY
from tests.conftest import make_settings
from tests.factories import Device, new_user_id, register, send_many, send_numbered
from tests.server import running_server
from tests.test_retention import run_cli

pytestmark = pytest.mark.slow

WEEK = timedelta(days=7)


@pytest.fixture
async def db(fresh_pg: str) -> AsyncIterator[Database]:
    """A database of its own: retention prunes every user in it."""
    database = open_database(make_settings(fresh_pg))
    yield database
    await database.dispose()


async def _drain(
    client: httpx.AsyncClient, device: Device, since: int, pages: list[dict[str, Any]]
) -> int:
    while True:
        response = await client.get(
            "/sync", params={"since": since, "limit": 4}, headers=device.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        since = page["next_since"]
        if not page["has_more"]:
            return since


@pytest.mark.server
async def test_retention_while_clients_send_and_sync(fresh_pg: str, db: Database) -> None:
    fans_count, per_fan, replies = 4, 20, 20
    with running_server(fresh_pg) as server:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            owner = await register(client, "owner")
            fans = [await register(client, "fan") for _ in range(fans_count)]
            early = await send_many(db, fans[0].user_id, owner.user_id, 12, prefix="early")
            # Pruned before the owner syncs at all: the first pages must come from history.
            await prune(db, WEEK, 3)
            statuses: list[int] = []
            sending = asyncio.gather(
                *(
                    send_numbered(
                        client, fan, owner.user_id, per_fan, statuses, client_msg_ids=False
                    )
                    for fan in fans
                ),
                # The owner sends too, and two fans cross: every send locks two users rows
                # while retention batches lock many.
                send_numbered(
                    client, owner, fans[0].user_id, replies, statuses, client_msg_ids=False
                ),
                send_numbered(
                    client, fans[1], fans[2].user_id, replies, statuses, client_msg_ids=False
                ),
                send_numbered(
                    client, fans[2], fans[1].user_id, replies, statuses, client_msg_ids=False
                ),
            )

            async def keep_pruning() -> list[PruneReport]:
                reports = []
                while not sending.done():
                    reports.append(await prune(db, WEEK, 3, batch_users=2, batch_entries=5))
                    await asyncio.sleep(0.005)
                return reports

            pruning = asyncio.ensure_future(keep_pruning())
            pages: list[dict[str, Any]] = []
            since = 0
            while not (sending.done() and pruning.done()):
                since = await _drain(client, owner, since, pages)
                await asyncio.sleep(0.01)
            await sending
            reports = await pruning
            await _drain(client, owner, since, pages)

    assert set(statuses) == {201}
    assert sum(report.deleted for report in reports) > 0
    entries = [e for page in pages for e in page["entries"]]
    # Exactly once, in order, no gaps: nothing lost to retention, nothing replayed twice.
    assert [e["version"] for e in entries] == list(range(1, len(entries) + 1))
    bodies = [e["data"]["body"] for e in entries]
    assert bodies[:12] == [m["body"] for m in early]
    expected = {f"{fan.user_id}:{i}" for fan, i in itertools.product(fans, range(per_fan))}
    expected |= {f"{owner.user_id}:{i}" for i in range(replies)}
    assert sorted(bodies[12:]) == sorted(expected)
    for sender in [*fans, owner]:
        mine = [b for b in bodies if b.startswith(sender.user_id + ":")]
        count = replies if sender is owner else per_fan
        assert mine == [f"{sender.user_id}:{i}" for i in range(count)]
    assert pages[0]["history_fallback"] is True
    # Every store ends within the cap, its floor right below what it kept.
    async with db.read_sessions() as session:
        users = (await session.execute(select(User.user_id, User.latest_version))).all()
        for user in users:
            kept = await session.scalars(
                select(InboxEntry.version).where(InboxEntry.user_id == user.user_id)
            )
            floor = await session.scalar(
                select(User.floor_version).where(User.user_id == user.user_id)
            )
            assert sorted(kept) == list(range((floor or 0) + 1, user.latest_version + 1))


async def _store(db: Database) -> tuple[int, list[tuple[str, int]]]:
    async with db.read_sessions() as session:
        entries = await session.scalar(select(func.count()).select_from(InboxEntry))
        floors = await session.execute(
            select(User.user_id, User.floor_version).order_by(User.user_id)
        )
        return entries or 0, [(u, f) for u, f in floors]


async def _load(db: Database, pairs: int, count: int) -> None:
    """`pairs` senders with `count` messages each to their own recipient (no HTTP, no login)."""
    for _ in range(pairs):
        sender, recipient = new_user_id("s"), new_user_id("r")
        async with db.session() as session, session.begin():
            session.add_all(User(user_id=u, password_hash="-") for u in (sender, recipient))
        await send_many(db, sender, recipient, count)


async def test_a_second_run_exits_cleanly_or_waits(fresh_pg: str, db: Database) -> None:
    await _load(db, pairs=2, count=6)
    before = await _store(db)
    async with await psycopg.AsyncConnection.connect(fresh_pg, autocommit=True) as holder:
        await holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        busy = await run_cli(fresh_pg, "--max-entries", "2")
        assert busy == {"already_running": True}
        assert await _store(db) == before

        waiting = asyncio.ensure_future(run_cli(fresh_pg, "--max-entries", "2", "--wait"))
        # Wait until the run queues on the lock (observed in pg_locks, not guessed by time).
        while not waiting.done():
            cursor = await holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            row = await cursor.fetchone()
            if row is not None and row[0] == 1:
                break
            await asyncio.sleep(0.05)
        assert not waiting.done()
        assert await _store(db) == before
        await holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        done = await waiting
    assert (done["already_running"], done["deleted_by_count"]) == (False, 16)


async def test_two_concurrent_runs_give_the_result_of_one(fresh_pg: str, db: Database) -> None:
    await _load(db, pairs=6, count=30)
    runs = await asyncio.gather(*(run_cli(fresh_pg, "--max-entries", "5") for _ in range(2)))
    # Either one run did the work while the other exited, or they ran one after the other.
    assert sum(run.get("deleted", 0) for run in runs) == 12 * 25
    assert sum(run.get("users_touched", 0) for run in runs) == 12
    entries, floors = await _store(db)
    assert entries == 12 * 5
    assert {floor for _, floor in floors} == {25}
