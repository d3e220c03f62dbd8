"""A pg_auto_failover formation (Debian's postgresql-15-auto-failover): a monitor, a primary
and a synchronous standby, each a `pg_autoctl` service of its own in a temporary directory
on free ports, as an operator runs them. The machine's main cluster is not touched.

pg_autoctl refuses to run as root: as root the services run as the `postgres` user, in
directories it owns. Connections from 127.0.0.1 are trusted and unencrypted.

`FAST` shortens the monitor's failover timeouts from about 50 s (the defaults: 20 s before
a node is unhealthy, then 30 s waiting for the old primary to demote itself) to seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.testing import free_port
from tests.conftest import IN_CI

PG_AUTOCTL = shutil.which("pg_autoctl") or "/usr/bin/pg_autoctl"
PG_BIN = "/usr/lib/postgresql/15/bin"
DATABASE = "msgsync"
SETUP_TIMEOUT = 120.0  # a guard against a formation that never forms, not a measurement

# The monitor's settings (milliseconds; `pgautofailover.*`). A killed primary's keeper never
# reports again, so the monitor waits node_considered_unhealthy_timeout after the failed
# health checks, then primary_demote_timeout for a demotion that cannot come.
FAST = {
    "health_check_period": 500,
    "health_check_timeout": 500,
    "health_check_max_retries": 1,
    "health_check_retry_delay": 200,
    "node_considered_unhealthy_timeout": 1000,
    "primary_demote_timeout": 1000,
    "startup_grace_period": 1000,
    # A standby a few megabytes behind (the asynchronous case) is still promoted.
    "promote_wal_log_threshold": 2_000_000_000,
}


def require_pg_autoctl() -> None:
    if not Path(PG_AUTOCTL).exists():
        if IN_CI:
            pytest.fail("pg_autoctl is required under CI (.ci/run installs it)")
        pytest.skip("pg_autoctl (postgresql-15-auto-failover) is not installed")


@dataclass
class Node:
    name: str
    port: int
    pgdata: Path
    process: subprocess.Popen[bytes]

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.url(), autocommit=True, connect_timeout=2)

    def writable(self) -> bool:
        try:
            with self.connect() as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.OperationalError:
            return False
        return row is not None and row[0] is False

    def kill(self) -> None:
        """As the machine dying would: SIGKILL to the keeper (its whole process group, the
        postmaster included) and to every server process (each is a session leader)."""
        postmaster = _postmaster_pid(self.pgdata)
        children = _children(postmaster) if postmaster else []
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in [p for p in (postmaster, *children) if p]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class Formation:
    workdir: Path
    monitor: Node
    nodes: list[Node] = field(default_factory=list)

    @property
    def monitor_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.monitor.port}/pg_auto_failover"

    def uri(self) -> str:
        """The formation's URL as `pg_autoctl show uri --formation default` prints it, with
        the role msgsync connects as (the URL names none: libpq would take the OS user)."""
        printed = self.autoctl("show", "uri", "--formation", "default", "--pgdata",
                               str(self.monitor.pgdata)).strip()  # fmt: skip
        assert printed.startswith("postgres://"), printed
        return printed.replace("postgres://", "postgresql://postgres@", 1)

    def autoctl(self, *args: str) -> str:
        done = subprocess.run(
            _as_postgres(self.workdir, [PG_AUTOCTL, *args]),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_autoctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def states(self) -> dict[int, tuple[str, str]]:
        """Each node's port: (reported state, assigned state), as the monitor has them."""
        with psycopg.connect(self.monitor_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT nodeport, reportedstate::text, goalstate::text FROM pgautofailover.node"
            ).fetchall()
        return {port: (reported, goal) for port, reported, goal in rows}

    def wait_states(self, wanted: Mapping[int, str], timeout: float = SETUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if all(states.get(port) == (state, state) for port, state in wanted.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the formation did not settle: {states} != {wanted}")
            time.sleep(0.1)

    def primary(self) -> Node:
        return next(n for n in self.nodes if n.process.poll() is None and n.writable())

    def standby(self) -> Node:
        return next(n for n in self.nodes if n.process.poll() is None and not n.writable())

    def set_monitor(self, settings: Mapping[str, int]) -> None:
        with psycopg.connect(self.monitor_url, autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET pgautofailover.{name} = {int(value)}")
            conn.execute("SELECT pg_reload_conf()")


def _as_postgres(workdir: Path, command: list[str]) -> list[str]:
    # pg_autoctl keeps its state under XDG directories: the formation's own, not ~postgres.
    # A UTF-8 locale, or initdb makes SQL_ASCII databases, whose text psycopg returns as bytes.
    environment = [
        "LC_ALL=C.UTF-8",
        f"PATH={PG_BIN}:/usr/bin:/bin",
        f"HOME={workdir}",
        f"XDG_CONFIG_HOME={workdir / 'config'}",
        f"XDG_DATA_HOME={workdir / 'data'}",
        f"XDG_RUNTIME_DIR={workdir / 'run'}",
    ]
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return [*prefix, "env", "-i", *environment, *command]


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _start(workdir: Path, name: str, command: list[str]) -> Node:
    port = free_port()
    pgdata = workdir / name
    log = (workdir / f"{name}.log").open("ab")
    common = [
        "--pgdata", str(pgdata), "--pgport", str(port), "--pgctl", f"{PG_BIN}/pg_ctl",
        "--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--ssl-mode", "disable",
    ]  # fmt: skip
    process = subprocess.Popen(
        _as_postgres(workdir, [PG_AUTOCTL, *command, *common, "--run"]),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: killed as one
    )
    log.close()
    return Node(name, port, pgdata, process)


def _wait_accepting(
    node: Node, database: str, upstream: Node | None = None, timeout: float = SETUP_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if node.process.poll() is not None:
            raise RuntimeError(f"pg_autoctl for {node.name} exited with {node.process.returncode}")
        try:
            with psycopg.connect(node.url(database), connect_timeout=1):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            if upstream is not None:
                # pg_autoctl's base backup waits for a spread checkpoint (minutes on an
                # idle server): asking for one makes it immediate.
                with upstream.connect() as conn:
                    conn.execute("CHECKPOINT")
            time.sleep(0.2)


@contextmanager
def formation(monitor_settings: Mapping[str, int] | None = None) -> Iterator[Formation]:
    """A monitor, a primary and a synchronous standby (pg_auto_failover's defaults, plus
    monitor_settings), ready; every process killed and every file gone afterwards."""
    require_pg_autoctl()
    workdir = Path(tempfile.mkdtemp(prefix="msgsync-formation-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        if os.geteuid() == 0:
            shutil.chown(workdir, "postgres", "postgres")
        monitor = _start(workdir, "monitor", ["create", "monitor"])
        stack.callback(_stop, monitor)
        formation_ = Formation(workdir, monitor)
        _wait_accepting(monitor, "pg_auto_failover")
        formation_.set_monitor(monitor_settings or {})
        monitor_uri = f"postgres://autoctl_node@127.0.0.1:{monitor.port}/pg_auto_failover"
        node_command = ["create", "postgres", "--dbname", DATABASE, "--monitor",
                        f"{monitor_uri}?sslmode=disable"]  # fmt: skip
        for name in ("node_a", "node_b"):
            node = _start(workdir, name, node_command)
            formation_.nodes.append(node)
            stack.callback(_stop, node)
            _wait_accepting(node, DATABASE, formation_.nodes[0] if formation_.nodes[1:] else None)
        ports = [n.port for n in formation_.nodes]
        formation_.wait_states({ports[0]: "primary", ports[1]: "secondary"})
        yield formation_


def _stop(node: Node) -> None:
    # No graceful shutdown to wait for: the files go with the formation.
    if node.process.poll() is None:
        node.kill()
