"""A primary failover as operators deploy it: a pg_auto_failover formation (tests/autofailover.py),
`msgsync serve --workers 2` on the URL `pg_autoctl show uri` prints, a storm of sends (retried
with their client_msg_id on 503s and dropped connections), long-polls and acks, and the
primary node killed (keeper and postmaster, SIGKILL) in the middle of it.

With synchronous replication (the formation's default) a 201 survives: nothing answered
201 or 200 is lost, nothing is stored twice, no user's versions have a gap, and every device
ends with exactly what the database holds. With asynchronous commit and a stalled standby
the new primary has lost acknowledged sends and hands their versions out again: every
device that had seen the lost history is told (409), none is served other entries silently.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.autofailover import FAST, Formation, formation
from tests.factories import Device, register
from tests.server import running_server
from tests.test_failover_urls import msgsync

pytestmark = [pytest.mark.server, pytest.mark.slow]

SENDERS = 20
DEVICES = 10
SENDS_EACH = 25  # per sender: enough to keep sending through the whole outage
KILL_AFTER = SENDERS * 8  # acknowledged sends before the primary dies
RETRYABLE = {502, 503, 504}
OUTAGE_GUARD = 60.0  # a guard against a failover that never comes, not a measurement


@dataclass
class Answer:
    at: float  # monotonic, when it came
    status: int | None  # None: no HTTP answer (connection refused, reset, timed out)
    seconds: float
    path: str


@dataclass
class Storm:
    client: httpx.AsyncClient
    recipients: list[Device]
    acknowledged: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    sending: bool = True
    kill_now: asyncio.Event = field(default_factory=asyncio.Event)
    kill_after: int = KILL_AFTER  # acknowledged sends before kill_now is set

    async def call(
        self, method: str, path: str, device: Device, **kwargs: Any
    ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = await self.client.request(method, path, headers=device.headers, **kwargs)
        except httpx.TransportError:
            response = None
        now = time.monotonic()
        status = None if response is None else response.status_code
        self.answers.append(Answer(now, status, now - started, path))
        return response

    async def sender(self, sender: Device, number: int) -> None:
        """Sends one after another; each retried with its client_msg_id until answered."""
        for i in range(SENDS_EACH):
            to = self.recipients[(number + i) % len(self.recipients)].user_id
            body = {"to": to, "body": f"{sender.user_id}:{i}", "client_msg_id": f"c{i}"}
            while True:
                response = await self.call("POST", "/messages", sender, json=body)
                if response is not None and response.status_code in (200, 201):
                    self.acknowledged[(sender.user_id, f"c{i}")] = response.json()
                    if len(self.acknowledged) >= self.kill_after:
                        self.kill_now.set()
                    break
                assert response is None or response.status_code in RETRYABLE, response.text
                await asyncio.sleep(0.05)

    async def pages(self, device: Device, since: int, since_id: str | None, wait: float) -> Any:
        """One sync answer: the page (200), the problem (409), or None to try again."""
        params: dict[str, Any] = {"since": since, "timeout": wait}
        if since_id is not None:
            params["since_id"] = since_id
        response = await self.call("GET", "/sync", device, params=params)
        if response is None or response.status_code in RETRYABLE:
            await asyncio.sleep(0.05)
            return None
        assert response.status_code in (200, 409), response.text
        return response


@dataclass
class Holder:
    """A long-polling device and what it holds: version -> entry, as a client keeps them."""

    device: Device
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)
    since: int = 0
    told: list[str] = field(default_factory=list)  # the 409 codes it was answered
    seen: set[tuple[int, str]] = field(default_factory=set)  # every (version, data) held
    silently_changed: list[int] = field(default_factory=list)

    @property
    def since_id(self) -> str | None:
        entry = self.entries.get(self.since)
        return None if entry is None else entry.get("id")

    def take(self, page: dict[str, Any]) -> None:
        for entry in page["entries"]:
            held = self.entries.get(entry["version"])
            if held is not None and held != entry:
                self.silently_changed.append(entry["version"])
            self.entries[entry["version"]] = entry
            self.seen.add((entry["version"], json.dumps(entry["data"], sort_keys=True)))
        self.since = page["next_since"]

    def forget(self, code: str) -> None:
        """What a client does on 409: drop what it holds and sync again from 0."""
        self.told.append(code)
        self.entries.clear()
        self.since = 0


async def long_poll(storm: Storm, holder: Holder) -> None:
    """Long-polls and acks, as the SDKs do, until the senders are done and it has caught up."""
    while True:
        response = await storm.pages(holder.device, holder.since, holder.since_id, wait=1)
        if response is None:
            continue
        if response.status_code == 409:
            holder.forget(response.json()["code"])
            continue
        page = response.json()
        holder.take(page)
        if page["entries"]:
            await storm.call("POST", "/ack", holder.device, json={"version": page["next_since"]})
        if not storm.sending and not page["has_more"] and not page["entries"]:
            return


@dataclass
class Outage:
    killed_at: float
    writable_at: float  # the standby promoted, as seen from here


def kill_the_primary_when(cluster: Formation, ready: threading.Event, outage: list[Outage]) -> None:
    ready.wait()
    primary, standby = cluster.primary(), cluster.standby()
    killed = time.monotonic()
    primary.kill()
    while not standby.writable():
        assert time.monotonic() - killed < OUTAGE_GUARD, cluster.states()
        time.sleep(0.02)
    outage.append(Outage(killed, time.monotonic()))


async def storm_through_a_failover(
    cluster: Formation,
    url: str,
    before_kill: Callable[[Storm], Awaitable[None]] | None = None,
) -> tuple[Storm, list[Holder], Outage]:
    with running_server(url, workers=2) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            recipients = [await register(client, "device") for _ in range(DEVICES)]
            senders = [await register(client, "sender") for _ in range(SENDERS)]
            storm = Storm(client, recipients)
            holders = [Holder(device) for device in recipients]
            ready, outage = threading.Event(), list[Outage]()
            killer = threading.Thread(
                target=kill_the_primary_when, args=(cluster, ready, outage), daemon=True
            )
            killer.start()

            async def trigger() -> None:
                await storm.kill_now.wait()
                if before_kill is not None:
                    await before_kill(storm)
                ready.set()

            polls = [asyncio.create_task(long_poll(storm, h)) for h in holders]
            await asyncio.gather(trigger(), *(storm.sender(s, n) for n, s in enumerate(senders)))
            storm.sending = False
            await asyncio.to_thread(killer.join, OUTAGE_GUARD)
            await asyncio.gather(*polls)
    assert outage, "the standby was not promoted"
    return storm, holders, outage[0]


def database_state(cluster: Formation) -> tuple[list[Any], dict[str, dict[int, dict[str, Any]]]]:
    """The new primary's messages, and each user's inbox entries (version -> stored data)."""
    with cluster.primary().connect() as conn:
        messages = conn.execute(
            "SELECT id, sender, client_msg_id, body, sender_version, recipient_version "
            "FROM messages"
        ).fetchall()
        inbox: dict[str, dict[int, dict[str, Any]]] = {}
        user_id: str
        version: int
        data: str
        for user_id, version, data in conn.execute(
            "SELECT user_id, version, data FROM inbox ORDER BY user_id, version"
        ):
            inbox.setdefault(user_id, {})[version] = json.loads(data)
        latest: dict[str, int] = {
            row[0]: row[1] for row in conn.execute("SELECT user_id, latest_version FROM users")
        }
    for user_id, versions in inbox.items():
        assert sorted(versions) == list(range(1, latest[user_id] + 1)), f"gap for {user_id}"
    return messages, inbox


def report(storm: Storm, outage: Outage) -> str:
    """The outage as clients saw it, for the test's output (-s) and the docs."""
    # The first send both started and stored after the kill (an answer already on its way
    # when the primary died does not end the outage).
    first_ok = min(
        (
            a.at
            for a in storm.answers
            if a.path == "/messages"
            and a.status in (200, 201)
            and a.at - a.seconds >= outage.killed_at
        ),
        default=float("nan"),
    )
    meanwhile = [a for a in storm.answers if outage.killed_at <= a.at < first_ok]
    by_status = Counter("no answer" if a.status is None else a.status for a in meanwhile)
    slow = sorted(a.seconds for a in meanwhile)
    return (
        f"promotion {outage.writable_at - outage.killed_at:.2f} s; first send stored after "
        f"the kill {first_ok - outage.killed_at:.2f} s; answers meanwhile {dict(by_status)}, "
        f"median {slow[len(slow) // 2] if slow else 0:.2f} s, slowest {max(slow, default=0):.2f} s"
    )


@pytest.fixture
def synchronous() -> Iterator[tuple[Formation, str]]:
    with formation(FAST) as cluster:
        url = cluster.uri()
        migrated = msgsync("migrate", url)
        assert migrated.returncode == 0, migrated.stderr
        yield cluster, url


async def test_no_acknowledged_send_is_lost_across_a_synchronous_failover(
    synchronous: tuple[Formation, str],
) -> None:
    cluster, url = synchronous
    storm, holders, outage = await storm_through_a_failover(cluster, url)
    print(report(storm, outage))
    messages, inbox = database_state(cluster)

    # Every send answered 201 or 200 is stored, once, as answered.
    stored = {(sender, cmid): (mid, body) for mid, sender, cmid, body, _, _ in messages}
    assert len(storm.acknowledged) == SENDERS * SENDS_EACH
    for (sender, cmid), answer in storm.acknowledged.items():
        assert stored[(sender, cmid)] == (answer["message"]["id"], answer["message"]["body"])
    assert len(messages) == len(storm.acknowledged)
    assert Counter(body for _, _, _, body, _, _ in messages).most_common(1)[0][1] == 1

    # Every device holds exactly what its user's inbox holds, never told to start again.
    for holder in holders:
        assert holder.told == []
        assert holder.silently_changed == []
        held = {v: e["data"] for v, e in holder.entries.items()}
        assert held == inbox[holder.device.user_id]


@pytest.fixture
def asynchronous() -> Iterator[tuple[Formation, str]]:
    """The formation with msgsync's commits not waiting for the standby, as an operator who
    trades durability for latency sets it."""
    with formation(FAST) as cluster:
        url = cluster.uri()
        with cluster.primary().connect() as conn:
            conn.execute("ALTER DATABASE msgsync SET synchronous_commit = local")
        migrated = msgsync("migrate", url)
        assert migrated.returncode == 0, migrated.stderr
        yield cluster, url


def stall_the_standby(cluster: Formation) -> None:
    """The primary stops streaming WAL to the standby (its WAL sender frozen): the standby
    falls behind by every commit from now on, as a slow network or disk would leave it."""
    with cluster.primary().connect() as conn:
        row = conn.execute("SELECT pid FROM pg_stat_replication").fetchone()
    assert row is not None, "no standby streams"
    os.kill(row[0], signal.SIGSTOP)


async def test_clients_are_told_when_an_asynchronous_failover_rewrote_their_history(
    asynchronous: tuple[Formation, str],
) -> None:
    cluster, url = asynchronous

    async def stall_then_send_more(storm: Storm) -> None:
        await asyncio.to_thread(stall_the_standby, cluster)
        storm.kill_now.clear()
        storm.kill_after = len(storm.acknowledged) + SENDERS * 4
        await storm.kill_now.wait()

    storm, holders, outage = await storm_through_a_failover(cluster, url, stall_then_send_more)
    print(report(storm, outage))
    messages, inbox = database_state(cluster)

    # The standby missed acknowledged sends: what this test is about.
    stored = {(sender, cmid): (mid, body) for mid, sender, cmid, body, _, _ in messages}
    lost = [
        key
        for key, answer in storm.acknowledged.items()
        if stored.get(key) != (answer["message"]["id"], answer["message"]["body"])
    ]
    assert lost, "the stalled standby missed nothing"
    assert Counter(body for _, _, _, body, _, _ in messages).most_common(1)[0][1] == 1

    for holder in holders:
        # Never another entry under a version it held, unless told to start again first.
        assert holder.silently_changed == []
        stored_now = inbox.get(holder.device.user_id, {})
        now = {(v, json.dumps(data, sort_keys=True)) for v, data in stored_now.items()}
        if holder.seen - now:  # it had seen history the new primary does not have
            assert holder.told, holder.device.user_id
            assert set(holder.told) <= {"history_rewritten", "since_ahead"}
        # And it ends with exactly what the database holds.
        held = {v: e["data"] for v, e in holder.entries.items()}
        assert held == stored_now
