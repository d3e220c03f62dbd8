"""Concurrent senders to overlapping groups and direct messages at once, over real HTTP:
every member's versions stay gap-free, each message reaches each member exactly once and in
seq order, and nothing deadlocks (no 500). PostgreSQL with two worker processes; SQLite."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import httpx
import pytest

from tests.factories import Device, register, sync_all
from tests.server import running_server

pytestmark = pytest.mark.server

PER_SENDER = 6


async def _send_group(
    client: httpx.AsyncClient, who: Device, group_id: str, statuses: list[int]
) -> None:
    for i in range(PER_SENDER):
        response = await client.post(
            f"/groups/{group_id}/messages",
            json={"body": f"{who.user_id}:{group_id}:{i}", "client_msg_id": f"{group_id}-{i}"},
            headers=who.headers,
        )
        statuses.append(response.status_code)


async def _send_direct(
    client: httpx.AsyncClient, who: Device, to: Device, statuses: list[int]
) -> None:
    for i in range(PER_SENDER):
        response = await client.post(
            "/messages",
            json={"to": to.user_id, "body": f"{who.user_id}:direct:{i}"},
            headers=who.headers,
        )
        statuses.append(response.status_code)


async def _exercise(url: str) -> None:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        users = [await register(client, "cc") for _ in range(6)]
        # Overlapping memberships, so that sends to different groups cross on shared users.
        shapes = [(0, 1, 2, 3), (2, 3, 4, 5), (0, 3, 5), (1, 4)]
        groups: dict[str, list[Device]] = {}
        for shape in shapes:
            owner, *rest = (users[i] for i in shape)
            response = await client.post(
                "/groups",
                json={"title": "cc", "members": [u.user_id for u in rest]},
                headers=owner.headers,
            )
            assert response.status_code == 201, response.text
            groups[response.json()["group"]["group_id"]] = [owner, *rest]
        statuses: list[int] = []
        work = [
            _send_group(client, member, group_id, statuses)
            for group_id, members in groups.items()
            for member in members
        ]
        # Direct sends crossing the group sends (and each other) on the same users' rows.
        work += [
            _send_direct(client, users[i], users[(i + 1) % len(users)], statuses)
            for i in range(len(users))
        ]
        await asyncio.gather(*work)
        assert set(statuses) == {201}, sorted(set(statuses))

        expected_groups = {u.user_id: [g for g, ms in groups.items() if u in ms] for u in users}
        for user in users:
            entries = await sync_all(client, user, limit=37)
            versions = [e["version"] for e in entries]
            assert versions == list(range(1, len(versions) + 1))  # gap-free
            seen: dict[str, list[int]] = defaultdict(list)
            ids: list[int] = []
            direct = 0
            for entry in entries:
                if entry["kind"] != "message":
                    continue
                data: dict[str, Any] = entry["data"]
                ids.append(data["id"])
                if data["group_id"] is None:
                    direct += 1
                else:
                    seen[data["group_id"]].append(data["seq"])
            assert len(ids) == len(set(ids))  # each message exactly once
            assert direct == 2 * PER_SENDER  # one peer sent to them, they sent to one
            for group_id in expected_groups[user.user_id]:
                seqs = seen[group_id]
                # Every message of the group, in seq order (seq 1 is `created`).
                assert len(seqs) == PER_SENDER * len(groups[group_id])
                assert seqs == sorted(seqs)
                assert seqs == list(range(2, 2 + len(seqs)))


async def test_overlapping_groups_on_postgresql_two_workers(postgresql_url: str) -> None:
    with running_server(postgresql_url, workers=2) as server:
        await _exercise(server.url)


async def test_overlapping_groups_on_sqlite(sqlite_url: str) -> None:
    with running_server(sqlite_url) as server:
        await _exercise(server.url)
