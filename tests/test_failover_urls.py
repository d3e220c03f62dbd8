"""Every libpq multi-host URL form, as an operator gives msgsync a primary and its standby
(`pg_autoctl show uri` prints the first): `msgsync migrate` and `serve` start on it, the
statements and the LISTEN connection skip a host that is down, and a URL msgsync cannot use
is one line at start-up, never a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from app.testing import free_port
from tests.conftest import create_pg_database, drop_pg_database
from tests.factories import register, send
from tests.proxy import stalling_proxy
from tests.replication import Pair, streaming_pair
from tests.server import running_server
from tests.test_longpoll import poll

pytestmark = pytest.mark.server

# The first host listed ("dead") is down (nothing listens on its port), or a hot standby:
# libpq goes on to the next.
FORMS = {
    "pg_autoctl": "postgres://{user}@{host}:{dead},{host}:{port}/{name}"
    "?target_session_attrs=read-write",
    "hosts_in_the_address": "postgresql://{user}@{host}:{dead},{host}:{port}/{name}",
    "sqlalchemy_host_list": "postgresql://{user}@/{name}?host={host}:{dead}&host={host}:{port}",
    "libpq_host_and_port_lists": "postgresql://{user}@/{name}?host={host},{host}&port={dead},{port}",
}


def msgsync(command: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", command],
        env={**os.environ, "MSGSYNC_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.fixture
def empty_pg(pg_admin_url: str) -> Iterator[str]:
    url = create_pg_database(pg_admin_url)
    try:
        yield url
    finally:
        drop_pg_database(pg_admin_url, url)


# Migrate, then serve with two workers, for each form: among the longest tests.
@pytest.mark.slow
@pytest.mark.parametrize("form", list(FORMS))
async def test_every_multi_host_form_migrates_serves_and_wakes_across_workers(
    empty_pg: str, form: str
) -> None:
    real = make_url(empty_pg)
    url = FORMS[form].format(
        user=real.username,
        host=real.host,
        port=real.port,
        dead=free_port(),
        name=real.database,
    )
    done = msgsync("migrate", url)
    assert done.returncode == 0, done.stderr
    assert "created the schema" in done.stdout
    await serve_and_wake(url)


async def serve_and_wake(url: str) -> None:
    """`msgsync serve --workers 2` on url: ready (running_server waits for /readyz 200, so
    the LISTEN connection is up), sends stored, and long-polls woken across the workers."""
    with running_server(url, workers=2) as server:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.url, limits=limits) as client:
            sender = await register(client)
            devices = [await register(client) for _ in range(12)]
            # Long-polls spread over both workers; each send reaches the other worker's
            # waiters through NOTIFY only.
            polls = [asyncio.create_task(poll(client, d, since=0)) for d in devices]
            await asyncio.sleep(1.0)
            for device in devices:
                await send(client, sender, device.user_id, f"hi {device.user_id}")
            for device, (page, elapsed) in zip(devices, await asyncio.gather(*polls), strict=True):
                assert [e["data"]["body"] for e in page["entries"]] == [f"hi {device.user_id}"]
                assert elapsed < 10
            for _ in range(6):  # both workers, most likely, answer one of these
                assert (await client.get("/readyz")).status_code == 200


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with streaming_pair() as made:
        with psycopg.connect(made.url(made.primary_port), autocommit=True) as conn:
            conn.execute("CREATE DATABASE msgsync")
        made.wait_replayed()
        yield made


# Over a streaming replica pair of the module's own, as tests/test_replicas.py.
@pytest.mark.slow
@pytest.mark.parametrize(
    "form", ["hosts_in_the_address", "sqlalchemy_host_list", "libpq_host_and_port_lists"]
)
async def test_a_hot_standby_listed_first_is_passed_over_for_the_primary(
    pair: Pair, form: str
) -> None:
    """A standby accepts connections but no writes, nor LISTEN: with several hosts listed
    msgsync asks libpq for the read-write one (target_session_attrs), whatever the order,
    as after a failover the old primary may come back as a standby listed first."""
    url = FORMS[form].format(
        user="postgres",
        host="127.0.0.1",
        dead=pair.replica_port,
        port=pair.primary_port,
        name="msgsync",
    )
    done = msgsync("migrate", url)
    assert done.returncode == 0, done.stderr
    await serve_and_wake(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgres://127.0.0.1:6002,127.0.0.1:x/msgsync", "'127.0.0.1:x' is not a host:port"),
        ("postgresql://u@/msgsync?host=h1,h2&port=1,x", "non-integer port"),
        ("postgresql://u@/msgsync?host=h1:1&host=h2:2&port=3", "Can't mix 'multihost' formats"),
        ("postgres://h1:1,h2:2/msgsync?host=h3", "hosts both in the address and in host="),
        ("mysql://h1/msgsync", "must be a postgresql://, postgres:// or sqlite:// URL"),
    ],
)
@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_an_unusable_url_is_one_line_at_start_up(command: str, url: str, says: str) -> None:
    done = msgsync(command, url, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("msgsync: invalid setting MSGSYNC_DATABASE_URL: ")
    assert says in lines[0]


def test_migrate_gives_up_on_a_database_that_stopped_answering(pg_admin_url: str) -> None:
    """A primary that died without closing connections (here a proxy that accepts them and
    never answers): `msgsync migrate` fails with an error instead of hanging."""
    with stalling_proxy(pg_admin_url) as (proxy, url):
        proxy.blackhole()
        # The subprocess timeout is a guard against a hang, not a measurement.
        done = msgsync("migrate", url, timeout=120)
    assert done.returncode != 0
    assert "timeout" in done.stderr.lower() or "timed out" in done.stderr.lower(), done.stderr
