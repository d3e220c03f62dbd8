"""The store's contract tests: every assertion runs against both implementations, each on a
fresh migrated database of its own (one per test module and database)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from app.db.models import Device, Pusher, User
from app.store import Store, open_database, open_store
from tests.conftest import make_settings, module_database


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with module_database(request.param, request, "store") as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    db = open_database(make_settings(store_url))
    try:
        yield open_store(db)
    finally:
        await db.dispose()


async def add_users(store: Store, count: int, prefix: str = "u") -> list[str]:
    ids = [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    async with store.db.session() as session, session.begin():
        await session.execute(insert(User), [{"user_id": u, "password_hash": "-"} for u in ids])
    return ids


async def add_device(store: Store, user_id: str) -> str:
    device_id = uuid.uuid4().hex[:16]
    async with store.db.session() as session, session.begin():
        await session.execute(
            insert(Device).values(
                device_id=device_id, user_id=user_id, token_hash=uuid.uuid4().bytes * 2
            )
        )
    return device_id


async def add_pusher(store: Store, user_id: str, device_id: str) -> str:
    pushkey = uuid.uuid4().hex
    async with store.db.session() as session, session.begin():
        await session.execute(
            insert(Pusher).values(
                app_id="org.example.app",
                pushkey=pushkey,
                device_id=device_id,
                user_id=user_id,
                gateway_url="http://127.0.0.1:9/_matrix/push/v1/notify",
                format="event_id_only",
                data="{}",
                created_at=datetime.now(UTC),
                pushed_version=0,
            )
        )
    return pushkey


async def lock_waiters(store: Store, statement_like: str = "%") -> int:
    """Backends of the store's (PostgreSQL) database waiting for a lock, among those running
    a statement LIKE statement_like: how a test knows a writer is queued before it goes on."""
    async with store.db.driver() as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE %s"
            " AND datname = current_database()",
            (statement_like,),
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
