"""Real databases for every storage test: a fresh PostgreSQL database per run, and SQLite."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from app import testing
from app.config import Settings
from app.main import create_app

PG_ADMIN_URL = os.environ.get(
    "MSGSYNC_TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _as_settings(environment: dict[str, str]) -> dict[str, str]:
    """A server environment of app.testing's as Settings keyword arguments, for the apps
    the tests build in-process: one set of test settings, whichever way a test serves."""
    return {name.removeprefix("MSGSYNC_").lower(): value for name, value in environment.items()}


# Tests hash many passwords; production keeps the strong defaults.
FAST_HASHING = _as_settings(testing.FAST_HASHING)
# Tests register and log in thousands of users from one address; tests/test_throttle.py
# turns the limits back on.
NO_THROTTLE = _as_settings(testing.NO_THROTTLE)
# Tests send many messages at once from one user; tests/test_send_rate.py turns the send
# rate back on.
NO_SEND_RATE = _as_settings(testing.NO_SEND_RATE)
# Each in-process app would open its whole statement pool at start, for a test that uses a
# connection or two; tests/test_database_outage.py checks the prewarm itself.
NO_PREWARM = _as_settings(testing.NO_PREWARM)


def _pg_down(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required under CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        _pg_down(str(exc))
    return PG_ADMIN_URL


def create_pg_database(admin_url: str) -> str:
    name = f"msgsync_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        # Throw-away databases need no flush to disk at each commit.
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def over_backends(url: str, aggregate: str, condition: str = "TRUE") -> int:
    """An aggregate over the server processes of url's database other than this query's own,
    e.g. count(pg_terminate_backend(pid)) ends them, as a restart or failover does."""
    name = url.rpartition("/")[2]
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as admin:
        row = admin.execute(
            f"SELECT {aggregate} FROM pg_stat_activity "
            f"WHERE datname = %s AND pid <> pg_backend_pid() AND ({condition})",
            (name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def drop_pg_database(admin_url: str, url: str) -> None:
    name = url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def migrated_pg_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database at the latest schema, dropped afterwards: a copy of the
    worker's migrated template (app.testing.fresh_database)."""
    with testing.fresh_database(admin_url) as url:
        yield url


@contextmanager
def module_database(
    database_url: str,
    request: pytest.FixtureRequest,
    name: str,
) -> Iterator[str]:
    """A fresh database of database_url's kind, migrated, for one module's tests alone (for
    tests that act on every user, such as retention)."""
    if database_url.startswith("sqlite"):
        with testing.fresh_database(prefix=name) as url:
            yield url
        return
    with migrated_pg_database(request.getfixturevalue("pg_admin_url")) as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _drop_database_templates() -> Iterator[None]:
    """An xdist worker may end without running exit handlers: the templates go with the
    session."""
    yield
    testing.drop_templates()


@pytest.fixture(scope="session")
def postgresql_url(pg_admin_url: str) -> Iterator[str]:
    """The run's shared PostgreSQL database (tests isolate themselves by fresh users)."""
    with migrated_pg_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def fresh_pg(pg_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database for one test alone."""
    with migrated_pg_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url() -> Iterator[str]:
    """The run's shared SQLite database."""
    with testing.fresh_database() as url:
        yield url


# The files that take longest, longest first (--durations, per file). Under xdist's
# --dist loadfile a worker takes a whole file and the run lasts until its last file ends,
# so these start first and the short files fill the gaps after; tools/test turns off
# xdist's own order (--no-loadscope-reorder: most tests first, whatever they cost).
LONGEST_FILES = (
    "test_failover_urls.py",
    "test_fuzz.py",
    "test_push_server.py",
    "test_longpoll.py",
    "test_web_client.py",
    "test_failover.py",
    "test_devices_http.py",
    "test_pgbouncer.py",
    "test_metrics.py",
    "test_push_bench.py",
    "test_wheel.py",
    "test_bench.py",
    "test_cli.py",
    "test_lockout.py",
    "test_push_abuse.py",
    "test_topology.py",
    "test_nginx_longpolls.py",
    "test_web_browser.py",
    "test_docs_browser.py",
    "test_validation.py",
    "test_testing.py",
    "test_replicas.py",
)
_SLOW_MARKS = ("browser", "topology", "slow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (LONGEST_FILES), then the other files with a test marked
    slow, browser or topology, then the rest; each file's tests keep their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    marked = {item.path for item in items if any(item.get_closest_marker(m) for m in _SLOW_MARKS)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank) + (item.path not in marked)))


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`one_backend`: the test runs on PostgreSQL alone instead of on both databases. For
    tests of the HTTP layer (validation, headers, documents, metrics...), whose storage is
    the store's, which tests/store/ checks on both; a parametrize mark of its own comes
    before the fixture's parameters (pytest's own generate_tests hooks run after this)."""
    if "database_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "one_backend"
    ):
        metafunc.definition.add_marker(
            pytest.mark.parametrize("database_url", ["postgresql"], indirect=True, scope="session")
        )


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def make_settings(database_url: str, **overrides: object) -> Settings:
    return Settings(
        database_url=database_url,
        **{**FAST_HASHING, **NO_THROTTLE, **NO_SEND_RATE, **NO_PREWARM, **overrides},  # type: ignore[arg-type]
    )


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:
        yield c
