"""The public test harness (app.testing): a real server on a fresh database, ready when the
block starts, stopped and its database gone when it ends."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from app.testing import (
    FAST_HASHING,
    NO_THROTTLE,
    ServerFailed,
    free_port,
    fresh_database,
    running_server,
)

pytestmark = pytest.mark.server

ORIGIN = "https://app.example.com"


def _databases(admin_url: str, name: str) -> list[str]:
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname = %s", (name,))
        return [row[0] for row in rows]


def _register(url: str, user_id: str) -> httpx.Response:
    return httpx.post(f"{url}/users", json={"user_id": user_id, "password": "harness-pass-1"})


def test_a_sqlite_file_of_its_own_served_then_removed() -> None:
    with running_server(env=FAST_HASHING) as server:
        # Ready on entry: the schema is there, a user can be created at once.
        assert _register(server.url, "first").status_code == 201
        path = Path(server.database_url.removeprefix("sqlite:///"))
        assert path.is_file()
    assert server.process.poll() is not None
    assert not path.exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_a_postgresql_database_of_its_own_with_workers_env_and_port(pg_admin_url: str) -> None:
    port = free_port()
    env = {**FAST_HASHING, **NO_THROTTLE, "MSGSYNC_CORS_ORIGINS": ORIGIN}
    with running_server(admin_url=pg_admin_url, workers=2, env=env, port=port) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        name = server.database_url.rpartition("/")[2]
        assert name.startswith("msgsync_test_")
        assert _databases(pg_admin_url, name) == [name]
        assert _register(server.url, "pg-first").status_code == 201
        # The env reached the server: its CORS answers the configured origin.
        response = httpx.get(f"{server.url}/healthz", headers={"origin": ORIGIN})
        assert response.headers["access-control-allow-origin"] == ORIGIN
    assert server.process.poll() is not None
    assert _databases(pg_admin_url, name) == []


def test_an_existing_database_is_served_and_kept(sqlite_url: str) -> None:
    with running_server(sqlite_url, env=FAST_HASHING) as server:
        assert server.database_url == sqlite_url
        assert _register(server.url, "kept-user").status_code == 201
    with running_server(sqlite_url, env=FAST_HASHING) as server:
        # The same database again: the user is still there.
        assert _register(server.url, "kept-user").status_code == 409


def test_a_server_that_does_not_start_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    # SQLite serves one process only: `msgsync serve` refuses two workers and exits.
    with (
        pytest.raises(ServerFailed, match="exited with 2") as failed,
        running_server(workers=2, log_path=log),
    ):
        pytest.fail("the server started")
    assert "SQLite serves one process only" in str(failed.value)


def test_both_an_existing_database_and_an_admin_url_is_refused(pg_admin_url: str) -> None:
    with (
        pytest.raises(ValueError, match="not both"),
        running_server("sqlite:///x.db", admin_url=pg_admin_url),
    ):
        pytest.fail("the server started")


@pytest.mark.parametrize(("durable", "expected"), [(False, "off"), (True, "on")])
def test_fresh_postgresql_commits_durably_only_when_asked(
    pg_admin_url: str, durable: bool, expected: str
) -> None:
    with fresh_database(pg_admin_url, "msgsync_harness", durable=durable) as url:
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == (expected,)
            # Migrated: the schema is at its head.
            assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
        name = url.rpartition("/")[2]
        assert name.startswith("msgsync_harness_")
    assert _databases(pg_admin_url, name) == []
