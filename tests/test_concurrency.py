"""Concurrent senders against a real server on PostgreSQL: exactly once, in order, no gaps."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest

from tests.factories import Device, register, send_numbered
from tests.server import running_server

pytestmark = pytest.mark.server


async def _drain(
    client: httpx.AsyncClient, device: Device, since: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    entries: list[dict[str, Any]] = []
    while True:
        response = await client.get(
            "/sync", params={"since": since, "limit": limit}, headers=device.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        entries.extend(page["entries"])
        since = page["next_since"]
        if not page["has_more"]:
            return entries, since


def _assert_gap_free(entries: list[dict[str, Any]]) -> None:
    versions = [e["version"] for e in entries]
    assert versions == list(range(1, len(versions) + 1))


async def test_concurrent_senders_and_crossing_sends(postgresql_url: str) -> None:
    senders, per_sender, crossing = 6, 25, 30
    with running_server(postgresql_url) as server:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            inbox_owner = await register(client, "rcpt")
            fans = [await register(client, "fan") for _ in range(senders)]
            alice, bob = await register(client, "alice"), await register(client, "bob")
            statuses: list[int] = []
            work = [
                send_numbered(client, fan, inbox_owner.user_id, per_sender, statuses)
                for fan in fans
            ]
            work += [
                send_numbered(client, alice, bob.user_id, crossing, statuses),
                send_numbered(client, bob, alice.user_id, crossing, statuses),
            ]
            sending = asyncio.gather(*work)
            seen: list[dict[str, Any]] = []
            since = 0
            # The recipient keeps syncing in small pages while the sends commit.
            while not sending.done():
                page, since = await _drain(client, inbox_owner, since, limit=7)
                seen.extend(page)
                await asyncio.sleep(0.01)
            await sending
            rest, since = await _drain(client, inbox_owner, since, limit=7)
            seen.extend(rest)

            assert set(statuses) == {201}
            _assert_gap_free(seen)
            bodies = [e["data"]["body"] for e in seen]
            expected = {
                f"{fan.user_id}:{i}" for fan, i in itertools.product(fans, range(per_sender))
            }
            assert len(bodies) == len(expected)
            assert set(bodies) == expected
            # Each sender's messages arrive in the order they were sent.
            for fan in fans:
                mine = [b for b in bodies if b.startswith(fan.user_id + ":")]
                assert mine == [f"{fan.user_id}:{i}" for i in range(per_sender)]

            for user in (alice, bob):
                entries, _ = await _drain(client, user, 0, limit=50)
                _assert_gap_free(entries)
                assert len(entries) == 2 * crossing
