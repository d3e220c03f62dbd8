"""The `msgsync` command line: --version, its help, migrate's report, retention's --max-age 0,
and what retention loads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from alembic.script import ScriptDirectory

from alembic import command
from app.cli import main
from app.config import Settings
from app.db.migrations import alembic_config
from tests.conftest import create_pg_database, drop_pg_database, make_settings, module_database
from tests.factories import register, send

WEEK_SECONDS = 7 * 86400


def test_version_names_the_installed_release(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"msgsync {version('msgsync')}"


def test_serve_help_shows_the_defaults_and_how_to_change_the_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    assert "--port PORT" in text
    assert "TCP port to listen on (default: 8000)" in text
    assert "(default: 127.0.0.1)" in text
    assert "msgsync serve --host 0.0.0.0 --port 9000" in text
    assert "MSGSYNC_DATABASE_URL" in text


def test_help_says_what_each_command_does_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    described = dict(re.findall(r"^    (serve|migrate|retention|bench) +(\S.*)$", text, re.M))
    assert described == {
        "serve": "run the server (API, web client at /app, docs at /docs)",
        "migrate": "create or upgrade the database schema",
        "retention": "delete old sync entries and unused devices (for cron)",
        "bench": "load-test a server and check that no message is lost",
    }
    assert "MSGSYNC_DATABASE_URL" in text
    # Nothing of how the project was built: issue numbers, workload codes, module names.
    assert re.findall(r"issue|\bW\d\b|uvicorn|app\.\w+", text, re.I) == []


def migrate(url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env={**os.environ, "MSGSYNC_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'msgsync.db'}"
        return
    admin_url: str = request.getfixturevalue("pg_admin_url")
    url = create_pg_database(admin_url)
    try:
        yield url
    finally:
        drop_pg_database(admin_url, url)


@pytest.mark.slow
def test_migrate_says_what_it_did(empty_database: str) -> None:
    url = Settings(database_url=empty_database).database_url
    config = alembic_config(url)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    assert head is not None
    older = script.get_revision(head).down_revision  # one migration behind the latest
    assert isinstance(older, str)
    # The database as named, without its driver or password.
    shown = re.sub(r"^(\w+)(\+\w+)?", r"\1", empty_database.replace("+psycopg", ""))

    assert migrate(empty_database) == (
        f"msgsync migrate: {shown}: created the schema at revision {head} "
        f"(the latest; {len(list(script.walk_revisions()))} migrations)"
    )
    assert migrate(empty_database) == (
        f"msgsync migrate: {shown}: already at revision {head} (the latest), nothing to do"
    )
    command.downgrade(config, older)
    assert migrate(empty_database) == (
        f"msgsync migrate: {shown}: upgraded the schema from revision {older} to {head} "
        "(1 migration)"
    )
    engine = sqlalchemy.create_engine(url.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            assert conn.scalar(sqlalchemy.text("SELECT version_num FROM alembic_version")) == head
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def store_url(database_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database for this module alone: `--max-age 0` prunes every user's store."""
    with module_database(database_url, request, "cli") as url:
        yield url


@pytest.fixture
def settings(store_url: str) -> Settings:
    return make_settings(store_url)


def retention(url: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "retention", "--json", *args],
        env={**os.environ, "MSGSYNC_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_retention_max_age_zero_means_zero_not_the_default(
    client: httpx.AsyncClient, store_url: str
) -> None:
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    for i in range(3):
        await send(client, alice, bob.user_id, f"m{i}")

    # Without --max-age the setting's week applies: nothing is that old.
    kept = retention(store_url)
    assert (kept["max_age_seconds"], kept["deleted"]) == (WEEK_SECONDS, 0)

    # Zero is zero: every entry written before the run is old enough (3 each for both).
    pruned = retention(store_url, "--max-age", "0")
    assert (pruned["max_age_seconds"], pruned["deleted_by_age"]) == (0, 6)

    # The messages themselves stay in the index table: bob still reads them all.
    page = (await client.get("/sync", params={"since": 0}, headers=bob.headers)).json()
    assert [e["data"]["body"] for e in page["entries"]] == ["m0", "m1", "m2"]
    assert page["history_fallback"] is True


# `msgsync retention` as the console script runs it, then the top-level packages it loaded
# among those it must not need.
_RETENTION_LOADS = """
import json, sys
from app.cli import main
code = main(sys.argv[1:])
loaded = {name.split(".")[0] for name in sys.modules}
print(json.dumps(sorted(loaded & {"fastapi", "starlette", "alembic"})))
sys.exit(code)
"""


def test_retention_loads_no_http_framework_nor_alembic_on_postgresql(postgresql_url: str) -> None:
    """A cron job's run costs mostly what it imports: the HTTP layer is the server's, and
    Alembic is for the databases migrated at start (SQLite), not PostgreSQL's."""
    done = subprocess.run(
        [sys.executable, "-c", _RETENTION_LOADS, "retention", "--json", "--dry-run"],
        env={**os.environ, "MSGSYNC_DATABASE_URL": postgresql_url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report, loaded = done.stdout.splitlines()
    assert json.loads(report)["dry_run"] is True
    assert json.loads(loaded) == []
