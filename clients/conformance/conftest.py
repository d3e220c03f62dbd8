"""Fixtures: a server per scenario (on PostgreSQL, or on each backend for the scenarios marked
`both_stores`), the proxy in front, adapters to drive."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from conformance.harness import Adapter, Backend, Direct, backend
from conformance.proxy import FaultProxy

PG_ADMIN_URL = os.environ.get(
    "MSGSYNC_TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--adapter",
        action="append",
        default=[],
        metavar="COMMAND",
        help="an SDK's adapter command line (split with shell rules, run from the repository "
        "root); given more than once, every scenario runs on each adapter, against the same "
        "servers. Default: $MSGSYNC_CONFORMANCE_ADAPTER, else the Python SDK's adapter.",
    )


# Where a scenario runs. The HTTP contract an SDK sees is one on every database, and the
# store contract suite (tests/store/) holds both stores to the same assertions, so a
# scenario runs on a PostgreSQL server alone (the production database) unless it is marked
# `both_stores`: its outcome depends on what the store itself does, which only running it
# on each store shows. That is a backup of the database restored under the server: the copy
# is the store's own (a file on SQLite, a template database on PostgreSQL), and what the
# server gives out after the restore (versions, message ids, entry ids, the devices it
# knows) comes from the restored store's sequences and rows. Retention through the command
# line is not: pruning and the history fallback are one code on both stores (held to it by
# tests/store/test_retention.py), and the store's own part of a run, its locks against
# other runs and sends, has nothing to contend with in a scenario.
BOTH_STORES = "both_stores"
STORE_KINDS = ("postgresql", "sqlite")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{BOTH_STORES}: a scenario whose outcome depends on what the store itself does "
        "(a backup of the database restored under the server); it runs on PostgreSQL and "
        "on SQLite, every other scenario on PostgreSQL alone",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each scenario on PostgreSQL, and on SQLite too when it is marked `both_stores`
    (BOTH_STORES above). With several --adapter, each scenario once per adapter (named by
    its command line); the servers are the same for all of them."""
    if "backend_kind" in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker(BOTH_STORES) is not None
        kinds = list(STORE_KINDS if both else STORE_KINDS[:1])
        metafunc.parametrize("backend_kind", kinds, indirect=True, scope="session")
    commands: list[str] = metafunc.config.getoption("adapter")
    if "adapters" in metafunc.fixturenames and len(commands) > 1:
        metafunc.parametrize("adapter_command", commands, indirect=True)


@pytest.fixture
def adapter_command(request: pytest.FixtureRequest) -> list[str] | None:
    """The adapter the scenario drives; None: the default (harness.adapter_command)."""
    param: str | None = getattr(request, "param", None)
    commands: list[str] = request.config.getoption("adapter")
    command = param if param is not None else (commands[0] if commands else None)
    return None if command is None else shlex.split(command)


def _admin_url(kind: str) -> str | None:
    if kind == "postgresql":
        try:
            with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
                pass
        except psycopg.OperationalError as exc:
            if IN_CI:
                pytest.fail(f"PostgreSQL is required under CI: {exc}")
            pytest.skip(f"PostgreSQL not available: {exc}")
        return PG_ADMIN_URL
    return None


@pytest.fixture(scope="session")
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The database of the scenario's server (pytest_generate_tests says which)."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def shared_server(backend_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One server per backend, for every module, for the scenarios that isolate themselves
    by fresh users (starting a server costs seconds on a loaded machine)."""
    kind = backend_kind
    with backend(kind, _admin_url(kind), tmp_path_factory.mktemp(kind)) as server:
        server.start()
        yield server


# Large groups (DESIGN.md "Groups") from the fourth member on: the scenarios about them
# need only a handful of users.
GROUP_FANOUT_LIMIT = 3


@pytest.fixture(scope="module")
def large_groups_server(
    backend_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A server whose groups turn large past GROUP_FANOUT_LIMIT members."""
    kind = backend_kind
    env = {"MSGSYNC_GROUP_FANOUT_LIMIT": str(GROUP_FANOUT_LIMIT)}
    with backend(kind, _admin_url(kind), tmp_path_factory.mktemp(kind), env) as server:
        server.start()
        yield server


@pytest.fixture
def own_server(backend_kind: str, tmp_path: Path) -> Iterator[Backend]:
    """A server for one scenario alone, which may stop, copy and restore its database."""
    kind = backend_kind
    with backend(kind, _admin_url(kind), tmp_path) as server:
        server.start()
        yield server


@pytest.fixture
def server(request: pytest.FixtureRequest, backend_kind: str) -> Backend:
    if "own_server" in request.fixturenames:
        name = "own_server"
    elif "large_groups_server" in request.fixturenames:
        name = "large_groups_server"
    else:
        name = "shared_server"
    found: Backend = request.getfixturevalue(name)
    return found


@pytest.fixture
def proxy(server: Backend) -> Iterator[FaultProxy]:
    proxy = FaultProxy(server.url)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def direct(server: Backend) -> Iterator[Direct]:
    truth = Direct(server)
    yield truth
    truth.close()


@pytest.fixture
def adapters(tmp_path: Path, adapter_command: list[str] | None) -> Iterator[Callable[[], Adapter]]:
    """Start adapters on demand; every one still running is closed at the end."""
    started: list[Adapter] = []
    cwd = Path(__file__).resolve().parents[2]  # the repository: adapter commands are relative

    def start() -> Adapter:
        adapter = Adapter(cwd, adapter_command)
        started.append(adapter)
        return adapter

    yield start
    for adapter in started:
        adapter.close()
