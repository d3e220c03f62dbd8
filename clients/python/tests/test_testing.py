"""msgsync_client.testing: the server started by the `msgsync` command, the database its
own and gone afterwards."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from msgsync_client.testing import (
    FAST_HASHING,
    ServerFailed,
    fresh_database,
    msgsync_command,
    running_server,
)

PG_ADMIN_URL = os.environ.get(
    "MSGSYNC_TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres"
)


def _databases(name: str) -> list[str]:
    with psycopg.connect(PG_ADMIN_URL) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname = %s", (name,))
        return [row[0] for row in rows]


def test_the_command_is_the_one_beside_this_interpreter() -> None:
    assert msgsync_command() == [str(Path(sys.executable).parent / "msgsync")]


def test_no_msgsync_command_is_said_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerFailed, match="msgsync command is not installed"):
        msgsync_command()


def test_a_postgresql_database_of_its_own_then_dropped() -> None:
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"PostgreSQL is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    with running_server(admin_url=PG_ADMIN_URL, workers=2, env=FAST_HASHING) as server:
        name = server.database_url.rpartition("/")[2]
        assert _databases(name) == [name]
        body = {"user_id": "sdk-harness", "password": "sdk-harness-pass"}
        assert httpx.post(f"{server.url}/users", json=body).status_code == 201
    assert server.process.poll() is not None
    assert _databases(name) == []


def test_a_server_that_does_not_start_raises() -> None:
    # SQLite serves one process only: `msgsync serve` refuses two workers and exits.
    with (
        fresh_database() as url,
        pytest.raises(ServerFailed, match="exited with 2"),
        running_server(url, workers=2),
    ):
        pytest.fail("the server started")
