"""The push part of the store, on both databases: leases, what a pusher has not seen,
settling, and synced positions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.store import Store
from app.store.inbox import Outgoing
from app.store.push import Lease, Pending, Settle
from tests.store.conftest import add_device, add_pusher, add_users


def later() -> datetime:
    # Past any due time a send just set (push_wait 0), on either database's clock.
    return datetime.now(UTC) + timedelta(minutes=1)


async def lease_mine(store: Store, user_id: str, now: datetime) -> list[tuple[Lease, Pending]]:
    leased, _ = await store.push.lease_and_read(now, now + timedelta(minutes=2), 1000)
    return [(lease, pending) for lease, pending in leased if lease.user_id == user_id]


async def test_a_send_makes_the_recipients_pushers_due_once(store: Store) -> None:
    alice, bob = await add_users(store, 2)
    phone = await add_device(store, bob)
    pushkey = await add_pusher(store, bob, phone)
    now = later()
    assert await lease_mine(store, bob, now) == []  # nothing sent: not due
    await store.inbox.send(Outgoing(alice, bob, "ping", None, push_wait=0))
    sent = await store.inbox.send(Outgoing(alice, bob, "pong", None, push_wait=0))
    assert sent is not None
    [(lease, pending)] = await lease_mine(store, bob, now)
    assert (lease.pushkey, lease.seen, lease.floor) == (pushkey, 0, 0)
    assert pending.unread == 2
    assert pending.latest == 2
    assert pending.newest == (sent.message["id"], alice, alice)
    # Leased: another round does not take it.
    assert await lease_mine(store, bob, now) == []
    await store.push.settle([Settle(lease.app_id, pushkey, pushed_version=2)], now)
    assert await lease_mine(store, bob, now + timedelta(hours=1)) == []


async def test_a_message_during_a_push_makes_it_due_again(store: Store) -> None:
    alice, bob = await add_users(store, 2)
    pushkey = await add_pusher(store, bob, await add_device(store, bob))
    await store.inbox.send(Outgoing(alice, bob, "first", None, push_wait=0))
    now = later()
    [(lease, _)] = await lease_mine(store, bob, now)
    await store.inbox.send(Outgoing(alice, bob, "during", None, push_wait=0))
    await store.push.settle([Settle(lease.app_id, pushkey, pushed_version=1)], now)
    [(again, pending)] = await lease_mine(store, bob, now)
    assert pending.latest == 2
    assert again.floor == 1


async def test_the_senders_own_devices_and_synced_ones_are_not_pushed(store: Store) -> None:
    alice, bob = await add_users(store, 2)
    alices_phone = await add_device(store, alice)
    await add_pusher(store, alice, alices_phone)
    bobs_phone = await add_device(store, bob)
    await add_pusher(store, bob, bobs_phone)
    await store.inbox.send(Outgoing(alice, bob, "hi", None, push_wait=0))
    await store.inbox.send(Outgoing(alice, alice, "note", None, push_wait=0))
    await store.push.record_synced([(bobs_phone, 1), (bobs_phone, 0)])
    leased, _ = await store.push.lease_and_read(later(), later() + timedelta(minutes=2), 1000)
    assert [lease for lease, _ in leased if lease.user_id == alice] == []
    [(lease, pending)] = [(lease, p) for lease, p in leased if lease.user_id == bob]
    assert lease.seen == 1
    assert pending.unread == 0
