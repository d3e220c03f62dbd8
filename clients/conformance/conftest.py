"""Fixtures: a server per scenario on each backend, the proxy in front, adapters to drive."""

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With several --adapter, each scenario once per adapter (named by its command line);
    the servers, module-scoped, are the same for all of them."""
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


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Every scenario runs on a server over each database."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="module")
def shared_server(backend_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One server per backend for the scenarios that isolate themselves by fresh users
    (starting a server costs seconds on a loaded machine)."""
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
def direct(server: Backend) -> Direct:
    return Direct(server)


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
