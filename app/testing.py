"""Start a real msgsync server for tests: on a fresh database, ready before you use it,
stopped (and the database dropped) afterwards.

    from app.testing import FAST_HASHING, NO_THROTTLE, running_server

    with running_server(env={**FAST_HASHING, **NO_THROTTLE}) as server:
        httpx.post(f"{server.url}/users", json={"user_id": "ada", "password": "..."})

With no database it serves a SQLite file in a temporary directory; with `admin_url` (a
PostgreSQL URL allowed to CREATE DATABASE) a database of its own, migrated, dropped at the
end; with `database_url` an existing database, left as it is. The server is `msgsync serve`
in a subprocess (uvicorn, `workers` processes), so the test talks to it over real HTTP.

This module is for the service's own tests and bench, and for anyone who installs msgsync
to test against it. The SDKs' tests cannot import the service: they start `msgsync serve`
themselves (clients/python/msgsync_client/testing.py)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

from app.db.migrations import upgrade_to_head

__all__ = [
    "FAST_HASHING",
    "NO_PREWARM",
    "NO_SEND_RATE",
    "NO_THROTTLE",
    "Server",
    "ServerFailed",
    "drop_templates",
    "free_port",
    "fresh_database",
    "running_server",
    "start_server",
    "stop_server",
    "wait_ready",
]

# Environment settings that tests usually want; pass them in `env`.

# Argon2 at its production cost (64 MiB and 3 passes per hash) makes every registration and
# login cost a noticeable fraction of a second: a suite that creates thousands of users
# would measure the hasher.
FAST_HASHING = {
    "MSGSYNC_ARGON2_TIME_COST": "1",
    "MSGSYNC_ARGON2_MEMORY_KIB": "64",
    "MSGSYNC_ARGON2_PARALLELISM": "1",
}
# Tests register and log in many users from one address, which the login and registration
# throttles would refuse after a few dozen.
NO_THROTTLE = {
    "MSGSYNC_REGISTRATIONS_PER_ADDRESS": "0",
    "MSGSYNC_LOGIN_ATTEMPTS_PER_ADDRESS": "0",
    "MSGSYNC_LOGIN_ATTEMPTS_PER_ACCOUNT": "0",
}
# Tests send many messages at once from one user, far faster than a person.
NO_SEND_RATE = {"MSGSYNC_SEND_RATE": "0"}
# Many servers side by side on one PostgreSQL (a suite's workers, each with its servers):
# each prewarms its statement pool at start, holding connections it may never use, and
# together they ran PostgreSQL (100 connections by default) out of connections. A test
# server opens them as its requests need them.
NO_PREWARM = {"MSGSYNC_DB_POOL_PREWARM": "false"}

READY_TIMEOUT = 60.0  # a guard against a server that hangs at start, not a measurement
STOP_GRACE = 20.0  # SIGTERM lets uvicorn finish its requests; then SIGKILL


class ServerFailed(RuntimeError):
    """The server exited before it was ready, or did not become ready in time."""


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:<port>, no trailing slash
    process: subprocess.Popen[bytes]
    database_url: str
    log_path: Path | None = None  # where its output goes, when asked for

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_server(self.process)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (another process may take it before it is used)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(
    url: str,
    process: subprocess.Popen[bytes],
    log_path: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Until the server's /readyz answers 200 (its database reachable and migrated);
    ServerFailed if the process exits first (with the tail of its log) or time runs out."""
    deadline = time.monotonic() + timeout
    # One client for every try: each httpx.get would build a client, and its TLS context,
    # again, which costs more than the try itself.
    with httpx.Client(timeout=1) as client:
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
                raise ServerFailed(f"server exited with {process.returncode}:\n{tail}")
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"server did not become ready in {timeout:.0f} s")
            time.sleep(0.1)


def stop_server(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_server(
    database_url: str,
    *,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    log: IO[bytes] | None = None,
    log_path: Path | None = None,
) -> Server:
    """`msgsync serve` on database_url, ready; stop it with `Server.stop()`.

    `env` adds to (and overrides) this process's environment, `MSGSYNC_*` settings included.
    The server's output goes to `log` (an open file) if given, else to this process's."""
    port = port or free_port()
    environment = {**os.environ, "MSGSYNC_DATABASE_URL": database_url, **(env or {})}
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--workers", str(workers)],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )
    server = Server(f"http://127.0.0.1:{port}", process, database_url, log_path)
    try:
        wait_ready(server.url, process, log_path)
    except BaseException:
        server.stop()
        raise
    return server


def _with_name(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


# One migrated template per PostgreSQL server (by admin URL) and one SQLite file, made on
# the first fresh_database of the process and removed by drop_templates (at the latest when
# the process exits): every fresh database after the first is a copy of it, not another run
# of the migrations (a suite creates hundreds). tests/test_migrations.py runs the
# migrations themselves on databases of its own.
_pg_templates: dict[str, str] = {}
_sqlite_template: list[Path] = []


def drop_templates() -> None:
    """Remove the templates fresh_database made in this process (it makes them again if
    called afterwards). Runs at exit; call it sooner where a process may end without its
    exit handlers (a pytest-xdist worker)."""
    for admin_url, name in _pg_templates.items():
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass  # the server is gone, and its databases with it
    _pg_templates.clear()
    for template in _sqlite_template:
        shutil.rmtree(template.parent, ignore_errors=True)
    _sqlite_template.clear()


atexit.register(drop_templates)


def _pg_template(admin_url: str) -> str:
    """The name of admin_url's server's migrated template database, made if need be."""
    name = _pg_templates.get(admin_url)
    if name is not None:
        return name
    name = f"msgsync_template_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade_to_head(_with_name(admin_url, name))
    except BaseException:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        raise
    _pg_templates[admin_url] = name
    return name


def _copy_sqlite_template(target: Path) -> None:
    """A migrated SQLite file at target, copied from the process's template."""
    if not _sqlite_template:
        directory = Path(tempfile.mkdtemp(prefix="msgsync_template-"))
        template = directory / "msgsync.db"
        upgrade_to_head(f"sqlite+aiosqlite:///{template}")
        _sqlite_template.append(template)
    # SQLite's backup copies a consistent database, whatever journal mode it is in.
    with (
        closing(sqlite3.connect(_sqlite_template[0])) as source,
        closing(sqlite3.connect(target)) as copy,
    ):
        source.backup(copy)


@contextmanager
def fresh_database(
    admin_url: str | None = None, prefix: str = "msgsync_test", *, durable: bool = False
) -> Iterator[str]:
    """A new database at the latest schema, gone afterwards.

    Without admin_url: a SQLite file in a temporary directory. With it: `<prefix>_<random>`
    created on that PostgreSQL server, dropped at the end even if connections remain. Its
    commits are not flushed to disk one by one (synchronous_commit off) unless `durable`: a
    test loses nothing by it, a benchmark would measure a server nobody runs.

    Either is a copy of a template the process migrates once (a database
    `msgsync_template_<random>` on that server, dropped when the process exits)."""
    if admin_url is None:
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as directory:
            path = Path(directory) / "msgsync.db"
            _copy_sqlite_template(path)
            yield f"sqlite:///{path}"
        return
    template = _pg_template(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        if not durable:
            conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    try:
        yield _with_name(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_server(
    database_url: str | None = None,
    *,
    admin_url: str | None = None,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    log_path: Path | None = None,
) -> Iterator[Server]:
    """A ready msgsync server for the block, stopped at its end.

    database_url: serve that database (already migrated; kept afterwards). Otherwise a
    fresh one (see `fresh_database`), on PostgreSQL if admin_url is given, else SQLite.
    log_path: write the server's output there (and quote its tail if it fails to start)."""
    if database_url is not None and admin_url is not None:
        raise ValueError("give database_url (an existing database) or admin_url, not both")
    with ExitStack() as stack:
        if database_url is None:
            database_url = stack.enter_context(fresh_database(admin_url))
        log = stack.enter_context(log_path.open("ab")) if log_path is not None else None
        server = start_server(
            database_url, workers=workers, env=env, port=port, log=log, log_path=log_path
        )
        stack.callback(server.stop)
        yield server
