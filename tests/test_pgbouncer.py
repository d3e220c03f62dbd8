"""Statements through PgBouncer in transaction pooling mode, with a direct session beside it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.config import Settings
from tests.factories import Device, register, sync_all
from tests.pgbouncer import running_pgbouncer
from tests.server import running_server


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


async def test_crossing_sends_through_transaction_pooling(fresh_pg: str) -> None:
    """Fewer server connections than clients, so every transaction may land on another one:
    with psycopg's prepared statements this failed ("prepared statement does not exist")."""
    with (
        running_pgbouncer(fresh_pg, pool_size=3) as bouncer,
        running_server(
            bouncer,
            workers=2,
            env={"MSGSYNC_DATABASE_SESSION_URL": fresh_pg, "MSGSYNC_DB_POOL_SIZE": "6"},
        ) as server,
    ):
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
