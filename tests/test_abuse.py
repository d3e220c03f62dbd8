"""Failures under a real server: one condition answers one code, and no failure costs the
client its keep-alive connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg

from tests.conftest import PG_ADMIN_URL, over_backends
from tests.factories import login, register, send
from tests.server import running_server
from tests.test_accounts import assert_problem


@contextmanager
def database_down(url: str) -> Iterator[None]:
    """A real outage of url's database: every connection ended and no new one accepted,
    until the block ends."""
    name = url.rpartition("/")[2]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            over_backends_admin(admin, name)
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def over_backends_admin(admin: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
    )


async def test_an_ack_during_an_outage_is_database_unavailable(fresh_pg: str) -> None:
    """The same answer as every other endpoint: on the lean path (token cached, JSON body),
    through the framework with the token cached (a +json type, which only the framework
    takes), and with a token the server has not seen yet (its look-up meets the outage)."""
    with running_server(fresh_pg) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            alice = await register(client)
            await send(client, alice, alice.user_id, "one")
            tablet = await login(client, alice.user_id, "tablet")
            # Cache the token in the worker, so that authenticating needs no database and
            # the ack itself meets the outage.
            assert (await client.get("/devices", headers=alice.headers)).status_code == 200
            json = {"content-type": "application/json"}
            ways = {
                "lean path": {**alice.headers, **json},
                "framework": {**alice.headers, "content-type": "application/merge-patch+json"},
                "token not cached": {**tablet.headers, **json},
            }
            with database_down(fresh_pg):
                for way, headers in ways.items():
                    response = await client.post("/ack", content=b'{"version": 1}', headers=headers)
                    assert_problem(response, 503, "database_unavailable")
                    assert response.headers["retry-after"] == "1", way
                    assert "Error" not in response.json()["detail"], way
            for way, headers in ways.items():
                response = await client.post("/ack", content=b'{"version": 1}', headers=headers)
                assert response.status_code == 200, (way, response.text)
                assert response.json()["acked_version"] == 1
            assert over_backends(fresh_pg, "count(*)") > 0
