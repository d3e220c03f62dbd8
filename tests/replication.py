"""A PostgreSQL primary and a streaming replica of its own, made with Debian's cluster tools
(pg_createcluster + pg_basebackup) on free ports: the machine's main cluster is not touched."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from app.testing import free_port
from tests.conftest import IN_CI

VERSION = "15"
HBA = """local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
host all all 10.0.0.0/8 trust
host replication all 10.0.0.0/8 trust
"""


@dataclass(frozen=True)
class Pair:
    primary_port: int
    replica_port: int
    names: tuple[str, str]

    def url(self, port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def set_replay_paused(self, paused: bool) -> None:
        """Hold the replica back, as a lagging one would be (WAL still arrives)."""
        call = "pg_wal_replay_pause()" if paused else "pg_wal_replay_resume()"
        with psycopg.connect(self.url(self.replica_port), autocommit=True) as conn:
            conn.execute(f"SELECT {call}")

    def wait_replayed(self) -> None:
        """Until the replica has replayed everything the primary has written."""
        with psycopg.connect(self.url(self.primary_port), autocommit=True) as primary:
            row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        with psycopg.connect(self.url(self.replica_port), autocommit=True) as replica:
            for _ in range(1000):
                done = replica.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)
                ).fetchone()
                if done and done[0]:
                    return
                time.sleep(0.02)
        raise AssertionError("the replica did not catch up")


def require_cluster_tools() -> None:
    if shutil.which("pg_createcluster") is None:
        if IN_CI:
            pytest.fail("pg_createcluster (postgresql-common) is required under CI")
        pytest.skip("pg_createcluster is not installed")


def _run(*command: str) -> None:
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stdout}{done.stderr}")


def _create(name: str, port: int, listen_all: bool) -> None:
    _run(
        "pg_createcluster", VERSION, name, "-p", str(port),
        "-o", "fsync=off", "-o", "max_connections=100",
        "-o", "shared_buffers=32MB", "-o", "wal_level=replica", "-o", "hot_standby=on",
    )  # fmt: skip
    config = Path(f"/etc/postgresql/{VERSION}/{name}")
    (config / "pg_hba.conf").write_text(HBA)
    if listen_all:  # for hosts in network namespaces of their own
        with (config / "postgresql.conf").open("a") as conf:
            conf.write("listen_addresses = '*'\n")


@contextmanager
def streaming_pair(listen_all: bool = False) -> Iterator[Pair]:
    require_cluster_tools()
    tag = uuid.uuid4().hex[:6]
    names = (f"msgsync_primary_{tag}", f"msgsync_replica_{tag}")
    pair = Pair(free_port(), free_port(), names)
    try:
        _create(names[0], pair.primary_port, listen_all)
        _run("pg_ctlcluster", VERSION, names[0], "start")
        _create(names[1], pair.replica_port, listen_all)
        data = Path(f"/var/lib/postgresql/{VERSION}/{names[1]}")
        # pg_basebackup fills the (emptied) data directory the cluster was made with.
        for item in data.iterdir():
            shutil.rmtree(item) if item.is_dir() else item.unlink()
        _run(
            "runuser", "-u", "postgres", "--", "pg_basebackup", "-h", "127.0.0.1",
            "-p", str(pair.primary_port), "-U", "postgres", "-D", str(data), "-R", "-X", "stream",
        )  # fmt: skip
        _run("pg_ctlcluster", VERSION, names[1], "start")
        yield pair
    finally:
        for name in reversed(names):
            subprocess.run(
                ["pg_dropcluster", VERSION, name, "--stop"], check=False, capture_output=True
            )
