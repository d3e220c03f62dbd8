"""A PgBouncer in transaction pooling mode in front of a test database (Debian's pgbouncer)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from app.testing import free_port
from tests.conftest import IN_CI

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def require_pgbouncer() -> None:
    if not Path(PGBOUNCER).exists():
        if IN_CI:
            pytest.fail("pgbouncer is required under CI (.ci/run installs it)")
        pytest.skip("pgbouncer is not installed")


@contextmanager
def running_pgbouncer(
    database_url: str, pool_size: int = 20, listen_addr: str = "127.0.0.1"
) -> Iterator[str]:
    """PgBouncer (pool_mode=transaction) for database_url's database; yields its URL."""
    require_pgbouncer()
    target = make_url(database_url)
    port = free_port()
    # PgBouncer will not run as root: it drops to the postgres user, who must read the files.
    workdir = Path(tempfile.mkdtemp(prefix="msgsync-pgbouncer-"))
    workdir.chmod(0o755)
    user = target.username or "root"
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
{target.database} = host={target.host or "127.0.0.1"} port={target.port or 5432}

[pgbouncer]
listen_addr = {listen_addr}
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits,options
"""
    )
    for path in workdir.iterdir():
        path.chmod(0o644)
    command = [PGBOUNCER, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    log = workdir / "pgbouncer.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process, log)
        yield target.set(port=port).render_as_string(False)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            output = log.read_text(errors="replace")
            raise RuntimeError(f"pgbouncer exited with {process.returncode}: {output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
