"""The accounts part of the store, on both databases: the clock and the attempt counters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.store import Store


async def test_the_clock_is_now(store: Store) -> None:
    async with store.db.statement() as conn:
        moment = await conn.scalar(select(store.accounts.clock()))
    assert isinstance(moment, datetime)
    assert abs(moment - datetime.now(UTC)) < timedelta(minutes=5)


async def test_attempts_past_the_limit_wait_and_a_clear_forgets(store: Store) -> None:
    key = f"login-account/{uuid.uuid4().hex}"
    counter = store.accounts
    assert await counter.count_attempt(key, 2, 60, 30) is None
    assert await counter.count_attempt(key, 2, 60, 30) is None
    # The limit is reached: the next attempt must wait 2**0 s, and is not counted.
    left = await counter.count_attempt(key, 2, 60, 30)
    assert left is not None
    assert 0 < left <= 1
    await counter.purge_attempts()  # a live counter is not purged
    assert await counter.count_attempt(key, 2, 60, 30) is not None
    await counter.clear_attempts(key)
    assert await counter.count_attempt(key, 2, 60, 30) is None
    # Other keys count on their own.
    assert await counter.count_attempt(key + "-other", 2, 60, 30) is None
