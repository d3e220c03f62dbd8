"""Statements through PgBouncer in transaction pooling mode, with a direct session beside it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest

from app.config import Settings
from app.db.models import User
from app.notifier import PgNotifier
from app.store import open_database
from app.store.postgresql.retention import LOCK_KEY
from tests.conftest import make_settings
from tests.factories import Device, new_user_id, register, send_many, sync_all
from tests.pgbouncer import running_pgbouncer
from tests.server import Server, running_server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("url", "session_url", "setting", "prepared"),
    [
        ("postgresql://h:5432/db", "", "auto", True),
        ("postgresql://pooler:5432/db", "postgresql://h:5432/db", "auto", False),
        ("postgresql://h:6432/db", "", "auto", False),
        ("postgresql://pooler:5432/db", "postgresql://h:5432/db", "on", True),
        ("postgresql://h:5432/db", "", "off", False),
    ],
)
def test_prepared_statements_are_off_behind_a_pooler(
    url: str, session_url: str, setting: str, prepared: bool
) -> None:
    settings = Settings(
        database_url=url,
        database_session_url=session_url,
        db_prepared_statements=setting,
    )
    assert settings.prepared_statements is prepared
    assert settings.session_url.endswith("/db")


async def _exchange(client: httpx.AsyncClient, sender: Device, peers: list[Device], n: int) -> int:
    """n sends from sender round the peers, each checked; returns how many went through."""
    sent = 0
    for i in range(n):
        peer = peers[i % len(peers)]
        response = await client.post(
            "/messages",
            json={"to": peer.user_id, "body": f"{sender.user_id}:{i}", "client_msg_id": f"c{i}"},
            headers=sender.headers,
        )
        assert response.status_code == 201, response.text
        sent += 1
        if i % 5 == 0:  # devices sync and ack as they go: every statement kind runs often
            page = await client.get("/sync", params={"since": 0}, headers=sender.headers)
            assert page.status_code == 200, page.text
            ack = await client.post(
                "/ack", json={"version": page.json()["next_since"]}, headers=sender.headers
            )
            assert ack.status_code == 200, ack.text
    return sent


@contextmanager
def _behind_the_pooler(fresh_pg: str) -> Iterator[Server]:
    """Two workers behind PgBouncer in transaction mode, with fewer server connections (3)
    than the workers' pools (6 each): every transaction may land on another one."""
    with (
        running_pgbouncer(fresh_pg, pool_size=3) as bouncer,
        running_server(
            bouncer,
            workers=2,
            env={"MSGSYNC_DATABASE_SESSION_URL": fresh_pg, "MSGSYNC_DB_POOL_SIZE": "6"},
        ) as server,
    ):
        yield server


async def test_crossing_sends_through_transaction_pooling(fresh_pg: str) -> None:
    """Fewer server connections than clients, so every transaction may land on another one:
    with psycopg's prepared statements this failed ("prepared statement does not exist")."""
    with _behind_the_pooler(fresh_pg) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            users = [await register(client) for _ in range(6)]
            per_sender = 30
            counts = await asyncio.gather(
                *(_exchange(client, u, [p for p in users if p is not u], per_sender) for u in users)
            )
            assert sum(counts) == per_sender * len(users)
            for user in users:
                entries = await sync_all(client, user)
                versions = [e["version"] for e in entries]
                # Every message sent or received, once, in gap-free version order.
                assert versions == list(range(1, len(versions) + 1))
                received = [e for e in entries if e["data"]["to"] == user.user_id]
                sent = [e for e in entries if e["data"]["from"] == user.user_id]
                assert len(sent) == per_sender
                assert len(received) == per_sender  # each of 5 peers sends it 6 of its 30


async def test_group_sends_through_transaction_pooling(fresh_pg: str) -> None:
    """A group send is one transaction sent as one pipeline (BEGIN, the group's lock, the
    send, COMMIT): through a transaction pooler with fewer server connections than senders,
    each group still gets gap-free seqs and each member every message once, in order."""
    with _behind_the_pooler(fresh_pg) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            users = [await register(client) for _ in range(4)]
            created = await client.post(
                "/groups",
                json={"title": "pooled", "members": [u.user_id for u in users[1:]]},
                headers=users[0].headers,
            )
            assert created.status_code == 201, created.text
            group_id = created.json()["group"]["group_id"]
            per_sender = 15

            async def say(user: Device) -> None:
                for i in range(per_sender):
                    response = await client.post(
                        f"/groups/{group_id}/messages",
                        json={"body": f"{user.user_id}:{i}", "client_msg_id": f"c{i}"},
                        headers=user.headers,
                    )
                    assert response.status_code == 201, response.text

            await asyncio.gather(*(say(u) for u in users))
            for user in users:
                entries = await sync_all(client, user)
                assert [e["version"] for e in entries] == list(range(1, len(entries) + 1))
                seqs = [e["data"]["seq"] for e in entries if e["kind"] == "message"]
                # The group's seqs after its creation's, gap-free, each message once.
                assert seqs == list(range(2, 2 + per_sender * len(users)))


async def _retention(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "app.cli", "retention", "--json", *args),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, json.loads(out) if out.strip() else {}, err.decode()


async def _advisory_locks(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        row = await cursor.fetchone()
        return int(row[0]) if row else -1


async def test_retention_through_transaction_pooling(fresh_pg: str) -> None:
    """Statements through the pooler, the lock on the direct session: every run runs (no
    false already_running), a held lock is honoured, and no run leaves the lock held."""
    db = open_database(make_settings(fresh_pg))
    try:
        sender, recipient = new_user_id("s"), new_user_id("r")
        async with db.session() as session, session.begin():
            session.add_all(User(user_id=u, password_hash="-") for u in (sender, recipient))
        await send_many(db, sender, recipient, 12)
    finally:
        await db.dispose()
    with running_pgbouncer(fresh_pg, pool_size=2) as bouncer:
        env = {"MSGSYNC_DATABASE_URL": bouncer, "MSGSYNC_DATABASE_SESSION_URL": fresh_pg}
        deleted = []
        for keep in ("10", "6", "6", "2"):
            status, report, err = await _retention(env, "--max-entries", keep)
            assert status == 0, err
            assert report["already_running"] is False, report
            deleted.append(report["deleted"])
            assert await _advisory_locks(fresh_pg) == 0
        # Both users' stores: 12 entries each, cut to 10, 6, 6 again (nothing), then 2.
        assert deleted == [4, 8, 0, 8]

        async with await psycopg.AsyncConnection.connect(fresh_pg, autocommit=True) as holder:
            await holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            status, report, err = await _retention(env)
            assert (status, report) == (0, {"already_running": True}), err
            await holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        status, report, err = await _retention(env)
        assert (status, report["already_running"]) == (0, False), err


async def test_a_listener_behind_transaction_pooling_is_not_ready(fresh_pg: str) -> None:
    """LISTEN through PgBouncer is accepted but hears nothing: the notifier must say it is
    down (so /readyz fails) rather than report a listener that never wakes anyone."""
    with running_pgbouncer(fresh_pg, pool_size=2) as bouncer:
        for url, hears in ((bouncer, False), (fresh_pg, True)):
            notifier = PgNotifier(Settings(database_url=url).database_url, "msgsync", 0.005)
            await notifier.start()
            try:
                assert notifier.healthy is hears
            finally:
                await notifier.stop()


async def test_wakeups_and_logouts_cross_workers_behind_the_pooler(fresh_pg: str) -> None:
    with (
        running_pgbouncer(fresh_pg, pool_size=3) as bouncer,
        running_server(
            bouncer, workers=2, env={"MSGSYNC_DATABASE_SESSION_URL": fresh_pg}
        ) as server,
    ):
        # A new connection per request, so that requests spread over both workers.
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=fresh) as client:
            alice, bob = await register(client), await register(client)
            for _ in range(20):  # bob's token now sits in both workers' caches
                response = await client.get("/devices", headers=bob.headers)
                assert response.status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            polls = [
                asyncio.create_task(
                    client.get("/sync", params={"since": 0, "timeout": 60}, headers=bob.headers)
                )
                for _ in range(6)
            ]
            await asyncio.sleep(0.5)  # the long-polls are waiting (a wake-up re-reads anyway)
            response = await client.post(
                "/messages", json={"to": bob.user_id, "body": "wake"}, headers=alice.headers
            )
            assert response.status_code == 201
            # Answered by the wake-up on whichever worker they wait (a missed one would hold
            # them for the whole minute and fail the test by its overall timeout).
            async with asyncio.timeout(30):
                pages = await asyncio.gather(*polls)
            assert all(p.json()["entries"][0]["data"]["body"] == "wake" for p in pages)

            assert (await client.post("/logout", headers=bob.headers)).status_code == 204
            # The revoke reaches the other worker in one NOTIFY round; without it the token
            # would live on there for the token cache's 60 s.
            for _ in range(400):  # 20 s at most
                if (await client.get("/devices", headers=bob.headers)).status_code == 401:
                    break
                await asyncio.sleep(0.05)
            statuses = [
                (await client.get("/devices", headers=bob.headers)).status_code for _ in range(40)
            ]
            assert statuses == [401] * 40
