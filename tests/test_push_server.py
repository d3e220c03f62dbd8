"""Push over real HTTP: msgsync servers (PostgreSQL with two workers, SQLite) and a gateway.

Negative cases ("no push for ...") end with a sentinel: a later message that must be
pushed. The worker handles pushes in the order they fall due, so a wrong push for the
earlier message would have reached the gateway before the sentinel's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.testing import free_port
from tests.factories import Device, login, register, send, sync
from tests.gateway import NOTIFY_PATH, Gateway, Script, running_gateway
from tests.server import running_server

pytestmark = pytest.mark.server

DELAY = 0.5  # seconds: MSGSYNC_PUSH_DELAY_SECONDS for these servers


@dataclass
class Push:
    gateway: Gateway
    client: httpx.AsyncClient

    async def pusher(self, device: Device, url: str | None = None, **extra: Any) -> str:
        """Register a pusher for the device; returns its pushkey."""
        pushkey = uuid.uuid4().hex
        body = {
            "app_id": "dev.msgsync.test",
            "pushkey": pushkey,
            "gateway_url": url or self.gateway.notify_url,
            **extra,
        }
        response = await self.client.post("/pushers", json=body, headers=device.headers)
        assert response.status_code == 201, response.text
        return pushkey


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with running_gateway() as g:
        yield g


@pytest.fixture(scope="module")
def late_port() -> int:
    """A port nobody serves until the refused-connection test starts a gateway there."""
    return free_port()


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def server_url(request: pytest.FixtureRequest, gateway: Gateway, late_port: int) -> Iterator[str]:
    if request.param == "postgresql":
        url, workers = request.getfixturevalue("postgresql_url"), 2
    else:
        url, workers = request.getfixturevalue("sqlite_url"), 1
    env = {
        # The gateway, and the port the refused-connection test points at.
        "MSGSYNC_PUSH_GATEWAYS": f"{gateway.url},http://127.0.0.1:{late_port}",
        "MSGSYNC_PUSH_DELAY_SECONDS": str(DELAY),
    }
    with running_server(url, workers=workers, env=env) as server:
        yield server.url


@pytest.fixture
async def push(server_url: str, gateway: Gateway) -> AsyncIterator[Push]:
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        yield Push(gateway, client)


async def test_an_offline_device_is_pushed_once_after_the_delay(push: Push) -> None:
    sender, phone = await register(push.client), await register(push.client)
    key = await push.pusher(phone)
    sent = await send(push.client, sender, phone.user_id, "hello")
    [notification] = await push.gateway.wait_for(key, 1)
    assert notification["event_id"] == str(sent["message"]["id"])
    assert notification["room_id"] == sender.user_id
    assert notification["type"] == "msgsync.message"
    assert notification["counts"] == {"unread": 1}
    assert notification["prio"] == "high"
    [target] = notification["devices"]
    assert target["app_id"] == "dev.msgsync.test"
    assert target["pushkey"] == key
    assert isinstance(target["pushkey_ts"], int)
    assert target["data"] == {}
    # id_only, the default: no text and no sender name leave the server.
    assert "content" not in notification
    assert "sender" not in notification


async def test_format_full_carries_the_sender_and_the_body(push: Push) -> None:
    sender, phone = await register(push.client), await register(push.client)
    tablet = await login(push.client, phone.user_id, "tablet")
    full = await push.pusher(phone, format="full", data={"sound": "ding"})
    plain = await push.pusher(tablet)
    await send(push.client, sender, phone.user_id, "the text")
    [notification] = await push.gateway.wait_for(full, 1)
    assert notification["sender"] == sender.user_id
    assert notification["content"] == {"body": "the text"}
    assert notification["devices"][0]["data"] == {"sound": "ding"}
    [bare] = await push.gateway.wait_for(plain, 1)
    assert "content" not in bare
    assert "sender" not in bare


async def test_a_device_that_synced_or_acked_in_time_is_not_pushed(push: Push) -> None:
    sender = await register(push.client)
    syncer, acker = await register(push.client), await register(push.client)
    keys = {syncer: await push.pusher(syncer), acker: await push.pusher(acker)}
    for device in (syncer, acker):
        await send(push.client, sender, device.user_id, "seen in time")
    page = await sync(push.client, syncer, since=0)
    assert len(page["entries"]) == 1
    response = await push.client.post("/ack", json={"version": 1}, headers=acker.headers)
    assert response.status_code == 200
    await asyncio.sleep(DELAY * 2)  # past the delay: pushes would be due now
    sentinels = {d: await send(push.client, sender, d.user_id, "sentinel") for d in keys}
    for device, key in keys.items():
        [notification] = await push.gateway.wait_for(key, 1)
        assert notification["event_id"] == str(sentinels[device]["message"]["id"])
        assert notification["counts"] == {"unread": 1}


async def test_a_device_holding_a_long_poll_is_not_pushed(push: Push) -> None:
    sender, phone = await register(push.client), await register(push.client)
    key = await push.pusher(phone)
    poll = asyncio.create_task(sync(push.client, phone, since=0, timeout=10))
    await asyncio.sleep(0.3)  # let the long-poll park (if it has not, it reads the entry)
    await send(push.client, sender, phone.user_id, "delivered at once")
    assert len((await poll)["entries"]) == 1
    await asyncio.sleep(DELAY * 2)
    sentinel = await send(push.client, sender, phone.user_id, "sentinel")
    [notification] = await push.gateway.wait_for(key, 1)
    assert notification["event_id"] == str(sentinel["message"]["id"])


async def test_the_sender_own_devices_are_not_pushed(push: Push) -> None:
    alice, bob = await register(push.client), await register(push.client)
    alice_phone = await login(push.client, alice.user_id, "phone")
    key = await push.pusher(alice_phone)
    await send(push.client, alice, bob.user_id, "from alice's laptop")
    await send(push.client, alice, alice.user_id, "a note to herself")
    await asyncio.sleep(DELAY * 2)
    reply = await send(push.client, bob, alice.user_id, "reply")
    [notification] = await push.gateway.wait_for(key, 1)
    assert notification["event_id"] == str(reply["message"]["id"])
    assert notification["counts"] == {"unread": 1}


async def test_pushes_are_coalesced_per_delay_window(push: Push) -> None:
    sender, phone = await register(push.client), await register(push.client)
    key = await push.pusher(phone)
    burst = [await send(push.client, sender, phone.user_id, f"m{i}") for i in range(3)]
    [first] = await push.gateway.wait_for(key, 1)
    assert first["event_id"] == str(burst[-1]["message"]["id"])
    assert first["counts"] == {"unread": 3}
    later = await send(push.client, sender, phone.user_id, "later")
    pushes = await push.gateway.wait_for(key, 2)
    assert len(pushes) == 2
    assert pushes[1]["event_id"] == str(later["message"]["id"])
    assert pushes[1]["counts"] == {"unread": 4}


async def test_a_message_sent_while_its_push_is_in_flight_is_pushed_after_it(push: Push) -> None:
    sender, phone = await register(push.client), await register(push.client)
    key = await push.pusher(phone)
    push.gateway.scripts[key] = Script(holds=[DELAY * 3])
    first = await send(push.client, sender, phone.user_id, "first")
    [notification] = await push.gateway.wait_for(key, 1)  # arrived, not yet answered
    assert notification["event_id"] == str(first["message"]["id"])
    second = await send(push.client, sender, phone.user_id, "while the push is in flight")
    pushes = await push.gateway.wait_for(key, 2)
    assert pushes[1]["event_id"] == str(second["message"]["id"])
    assert pushes[1]["counts"] == {"unread": 2}


async def test_a_rejected_pushkey_deletes_the_pusher(push: Push) -> None:
    sender, phone = await register(push.client), await register(push.client)
    key = await push.pusher(phone)
    kept = await push.pusher(await login(push.client, phone.user_id, "tablet"))
    push.gateway.scripts[key] = Script(reject=True)
    await send(push.client, sender, phone.user_id, "to a phone that uninstalled the app")
    await push.gateway.wait_for(key, 1)
    async with asyncio.timeout(10):
        while True:  # the pusher goes when the worker settles the answer
            listed = (await push.client.get("/pushers", headers=phone.headers)).json()
            if [p["pushkey"] for p in listed["pushers"]] == [kept]:
                break
            await asyncio.sleep(0.05)


async def test_gateway_errors_are_retried(push: Push) -> None:
    sender, phone = await register(push.client), await register(push.client)
    key = await push.pusher(phone)
    push.gateway.scripts[key] = Script(statuses=[500, 503])
    sent = await send(push.client, sender, phone.user_id, "through a flaky gateway")
    pushes = await push.gateway.wait_for(key, 3)
    assert {p["event_id"] for p in pushes} == {str(sent["message"]["id"])}
    # Accepted at the third attempt: the cursor moved, nothing more is sent for it.
    sentinel = await send(push.client, sender, phone.user_id, "sentinel")
    pushes = await push.gateway.wait_for(key, 4)
    assert len(pushes) == 4
    assert pushes[3]["event_id"] == str(sentinel["message"]["id"])


async def test_a_refused_connection_is_retried(push: Push, late_port: int) -> None:
    sender, phone = await register(push.client), await register(push.client)
    port = late_port  # nothing listens there yet
    key = await push.pusher(phone, url=f"http://127.0.0.1:{port}{NOTIFY_PATH}")
    sent = await send(push.client, sender, phone.user_id, "gateway down")
    await asyncio.sleep(DELAY * 3)  # the first attempts are refused
    with running_gateway(port) as late:
        [notification] = await late.wait_for(key, 1)
    assert notification["event_id"] == str(sent["message"]["id"])


async def test_redirects_are_not_followed(push: Push) -> None:
    sender, phone = await register(push.client), await register(push.client)
    key = await push.pusher(phone)
    push.gateway.scripts[key] = Script(statuses=[307])
    await send(push.client, sender, phone.user_id, "redirected")
    await push.gateway.wait_for(key, 1)
    sentinel = await send(push.client, sender, phone.user_id, "sentinel")
    pushes = await push.gateway.wait_for(key, 2)
    assert pushes[1]["event_id"] == str(sentinel["message"]["id"])
    assert "/elsewhere" not in push.gateway.paths()


async def test_each_device_is_pushed_once_across_workers(push: Push) -> None:
    sender = await register(push.client)
    phones = [await register(push.client) for _ in range(12)]
    keys = [await push.pusher(phone) for phone in phones]
    for phone in phones:
        await send(push.client, sender, phone.user_id, "one each")
    for key in keys:
        await push.gateway.wait_for(key, 1)
    sentinel = await send(push.client, sender, phones[0].user_id, "sentinel")
    pushes = await push.gateway.wait_for(keys[0], 2)
    assert pushes[1]["event_id"] == str(sentinel["message"]["id"])
    assert [len(push.gateway.pushes(key)) for key in keys[1:]] == [1] * 11


async def test_logout_stops_the_pushes(push: Push) -> None:
    sender, phone = await register(push.client), await register(push.client)
    tablet = await login(push.client, phone.user_id, "tablet")
    gone = await push.pusher(phone)
    kept = await push.pusher(tablet)
    assert (await push.client.post("/logout", headers=phone.headers)).status_code == 204
    sent = await send(push.client, sender, phone.user_id, "after logout")
    [notification] = await push.gateway.wait_for(kept, 1)
    assert notification["event_id"] == str(sent["message"]["id"])
    assert push.gateway.pushes(gone) == []


@pytest.mark.slow
async def test_a_failing_push_survives_a_restart(fresh_pg: str, gateway: Gateway) -> None:
    """The push state is the database's: a push the gateway kept failing while one server
    ran is sent by the server started after it."""
    env = {"MSGSYNC_PUSH_GATEWAYS": gateway.url, "MSGSYNC_PUSH_DELAY_SECONDS": str(DELAY)}
    with running_server(fresh_pg, env=env) as first:
        async with httpx.AsyncClient(base_url=first.url) as client:
            sender, phone = await register(client), await register(client)
            key = await Push(gateway, client).pusher(phone)
            gateway.scripts[key] = Script(statuses=[500] * 10_000)
            sent = await send(client, sender, phone.user_id, "before the restart")
            await gateway.wait_for(key, 1)
    gateway.scripts[key].statuses.clear()  # the first server is gone: the gateway heals
    failed = len(gateway.pushes(key))
    with running_server(fresh_pg, env=env):
        pushes = await gateway.wait_for(key, failed + 1)
    assert {p["event_id"] for p in pushes} == {str(sent["message"]["id"])}


async def test_a_group_message_is_pushed_to_the_other_members_with_the_group_as_room(
    push: Push,
) -> None:
    sender, phone = await register(push.client), await register(push.client)
    own, other = await push.pusher(sender), await push.pusher(phone)
    created = await push.client.post(
        "/groups", json={"title": "T", "members": [phone.user_id]}, headers=sender.headers
    )
    assert created.status_code == 201, created.text
    group_id = created.json()["group"]["group_id"]
    sent = await push.client.post(
        f"/groups/{group_id}/messages", json={"body": "hi all"}, headers=sender.headers
    )
    assert sent.status_code == 201, sent.text
    [notification] = await push.gateway.wait_for(other, 1)
    assert notification["event_id"] == str(sent.json()["message"]["id"])
    assert notification["room_id"] == group_id
    # Sentinel: a later direct message to the sender is the first push its device gets.
    stranger = await register(push.client)
    later = await send(push.client, stranger, sender.user_id, "sentinel")
    [first] = await push.gateway.wait_for(own, 1)
    assert first["event_id"] == str(later["message"]["id"])
