"""The `msgsync` command line: --version, serve's help, retention's --max-age 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli import main
from app.config import Settings
from app.migrations import upgrade_to_head
from tests.conftest import make_settings, migrated_pg_database
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


@pytest.fixture(scope="module")
def store_url(
    database_url: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database for this module alone: `--max-age 0` prunes every user's store."""
    if database_url.startswith("sqlite"):
        path: Path = tmp_path_factory.mktemp("cli") / "msgsync.db"
        url = f"sqlite:///{path}"
        upgrade_to_head(Settings(database_url=url).database_url)
        yield url
        return
    with migrated_pg_database(request.getfixturevalue("pg_admin_url")) as url:
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
