"""Retention over the store, on both databases: a batch raises the floor, and a page read
below the floor falls back to the messages' history. (Its own module: a run acts on every
user of its database.)"""

from __future__ import annotations

from datetime import timedelta

import orjson

from app.inbox.retention import prune
from app.store import Store
from app.store.inbox import Outgoing
from tests.store.conftest import add_users


async def test_a_batch_raises_the_floor_and_old_pages_fall_back(store: Store) -> None:
    alice, bob = await add_users(store, 2)
    sent = []
    for n in range(5):
        one = await store.inbox.send(Outgoing(alice, bob, f"m{n}", None))
        assert one is not None
        sent.append(one.message)
    report = await prune(store.db, timedelta(days=365), max_entries=2, batch_entries=2)
    assert report.deleted == 6
    assert report.users_touched == 2
    # Above the floor: the store as it was.
    page = await store.inbox.read_page(bob, 3, 10)
    assert [e.version for e in page.entries] == [4, 5]
    assert not page.history_fallback
    # Below it: the pruned messages from the history, then the store from the floor on,
    # in one gap-free run of versions.
    page = await store.inbox.read_page(bob, 1, 10)
    assert page.history_fallback
    assert [e.version for e in page.entries] == [2, 3, 4, 5]
    assert [orjson.loads(e.data) for e in page.entries] == sent[1:]
    bounded = await store.inbox.read_page(bob, 0, 2)
    assert [e.version for e in bounded.entries] == [1, 2]
    assert bounded.has_more
    # A run with nothing left to cut changes nothing.
    again = await prune(store.db, timedelta(days=365), max_entries=2)
    assert again.deleted == 0
