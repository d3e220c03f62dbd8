"""The connection budget: stated at start-up, kept when idle, and running out is a clear
error (503 database_unavailable for requests, one line and exit 1 for a retention run)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from app.db.budget import budget_report
from app.db.engine import ConnectionBudget
from app.main import create_app
from app.testing import free_port, stop_server, wait_ready
from tests.conftest import FAST_HASHING, make_settings, over_backends
from tests.factories import register, set_token_cache
from tests.test_accounts import assert_problem

pytestmark = pytest.mark.slow


def test_the_formula_and_a_warning_past_the_servers_limit(postgresql_url: str) -> None:
    settings = make_settings(postgresql_url)
    budget = ConnectionBudget.of(settings)
    assert budget.per_worker == budget.statements + budget.transactions + 2
    report = budget_report(settings, workers=2)
    assert report[0] == f"connection budget: {budget.formula(2)}"
    assert "max_connections" in report[1]
    # 4 x (200 + 50 + 2) connections cannot fit any server this test runs against.
    greedy = budget_report(make_settings(postgresql_url, db_pool_size=200), workers=4)
    assert greedy[-1].startswith("WARNING: this host may need 1008 connections")


def test_an_idle_server_with_four_workers_holds_its_budget(fresh_pg: str, tmp_path: Path) -> None:
    """Each idle worker holds its prewarmed statement pool and its two listen/notify
    sessions; nothing else. Four of them leave room for the test suite in a stock 100."""
    port, log = free_port(), tmp_path / "serve.log"
    env = {
        **os.environ,
        "MSGSYNC_DATABASE_URL": fresh_pg,
        **{f"MSGSYNC_{k.upper()}": str(v) for k, v in FAST_HASHING.items()},
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "4"],
            env=env,
            stderr=output,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process, log)
        budget = ConnectionBudget.of(make_settings(fresh_pg))
        idle = 4 * (budget.statements + budget.sessions)
        # The first worker to be ready answers /readyz; the others may still be starting.
        for _ in range(600):
            if over_backends(fresh_pg, "count(*)") >= idle:
                break
            time.sleep(0.2)
        for _ in range(10):
            assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        held = over_backends(fresh_pg, "count(*)")
    finally:
        stop_server(process)
    assert f"app.db.budget [-] connection budget: {budget.formula(4)}" in log.read_text()
    assert held == idle
    assert held <= 50


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    # Four workers start slowly on a loaded machine: a minute was not always enough.
    wait_ready(url, process, log, timeout=180)


@pytest.fixture
def limited_role(fresh_pg: str) -> Iterator[str]:
    """fresh_pg's URL as a role of its own (not a superuser, so connection limits bind)."""
    role = f"msgsync_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(fresh_pg, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    try:
        yield make_url(fresh_pg).set(username=role).render_as_string(False)
    finally:
        with psycopg.connect(fresh_pg, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def _limit(fresh_pg: str, role_url: str, limit: int) -> None:
    role = make_url(role_url).username
    with psycopg.connect(fresh_pg, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {role} CONNECTION LIMIT {limit}")
        if limit != 0:
            return
        # End the ones it holds, so that every request needs a new one; the backends exit
        # after the signal, which is not at once.
        for _ in range(500):
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.02)
        raise AssertionError(f"{role}'s connections did not end")


def test_a_retention_run_without_connections_says_so_in_one_line(
    fresh_pg: str, limited_role: str
) -> None:
    _limit(fresh_pg, limited_role, 0)
    run = subprocess.run(
        [sys.executable, "-m", "app.cli", "retention"],
        env={**os.environ, "MSGSYNC_DATABASE_URL": limited_role},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("retention: the database did not answer:")
    assert "too many connections" in lines[0]


# A connection psycopg opened while the role's limit was being hit is now and then
# collected unclosed (a ResourceWarning from its finaliser, seen in about one CI run in
# three); which of the app's connectors leaves it is not known yet. The behaviour asserted
# here (503 while starved, recovery after) does not depend on it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_requests_without_connections_are_503_then_recover(
    fresh_pg: str, limited_role: str
) -> None:
    app = create_app(make_settings(limited_role))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:
            alice, bob = await register(c), await register(c)
            await set_token_cache(app, c, alice, cached=True)
            _limit(fresh_pg, limited_role, 0)
            for _ in range(3):  # the dropped pooled connections, then refused new ones
                for response in (
                    await c.post(
                        "/messages", json={"to": bob.user_id, "body": "x"}, headers=alice.headers
                    ),
                    await c.get("/sync", params={"since": 0}, headers=bob.headers),
                    await c.post("/login", json={"user_id": bob.user_id, "password": "x" * 8}),
                ):
                    assert_problem(response, 503, "database_unavailable")
                    assert response.headers["retry-after"] == "1"
            _limit(fresh_pg, limited_role, -1)
            response = await c.post(
                "/messages", json={"to": bob.user_id, "body": "back"}, headers=alice.headers
            )
            assert response.status_code == 201, response.text
    await asyncio.sleep(0)
