"""The built wheel alone runs msgsync: a fresh venv, a bare working directory, no checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from alembic.script import ScriptDirectory

from app.db.migrations import alembic_config
from app.testing import free_port, stop_server
from tests.conftest import FAST_HASHING, create_pg_database, drop_pg_database

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def uv() -> str:
    """The uv that runs this suite (`uv run` exports it as UV), else the repository's."""
    return os.environ.get("UV") or shutil.which("uv") or str(REPO / "tools" / "uv")


@dataclass(frozen=True)
class Installed:
    bin: Path  # the venv's bin/
    workdir: Path  # an empty directory: nothing of the checkout is reachable from it

    def env(self, **settings: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "VIRTUAL_ENV"} and not k.startswith("MSGSYNC_")
        }
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return {**env, **{f"MSGSYNC_{k.upper()}": v for k, v in settings.items()}}

    def run(self, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bin / "msgsync"), *args],
            cwd=self.workdir,
            env=self.env(**settings),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"msgsync {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """One wheel build per run, installed into its own venv with the locked versions."""
    root = tmp_path_factory.mktemp("wheel")
    dist, venv, workdir = root / "dist", root / "venv", root / "work"
    workdir.mkdir()

    def call(*args: str) -> None:
        subprocess.run([uv(), *args], cwd=REPO, check=True, capture_output=True, timeout=300)

    call("build", "--wheel", "--out-dir", str(dist))
    (wheel,) = dist.glob("msgsync-*.whl")
    # The locked versions, as the Dockerfile installs them (and all already in uv's cache).
    requirements = root / "requirements.txt"
    call("export", "--locked", "--no-dev", "--no-emit-project", "--no-hashes",
         "--output-file", str(requirements))  # fmt: skip
    call("venv", "--quiet", "--python", sys.executable, str(venv))
    python = venv / "bin" / "python"
    call("pip", "install", "--quiet", "--python", str(python), "-r", str(requirements), str(wheel))
    return Installed(venv / "bin", workdir)


def test_the_package_comes_from_the_wheel(installed: Installed) -> None:
    done = subprocess.run(
        [str(installed.bin / "python"), "-c", "import app; print(app.__file__)"],
        cwd=installed.workdir,
        env=installed.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(done.stdout.strip()).is_relative_to(installed.bin.parent)
    assert not Path(done.stdout.strip()).is_relative_to(REPO)


def test_version_and_bench_help(installed: Installed) -> None:
    assert installed.run("--version").stdout.strip() == "msgsync 0.1.0"
    assert "--pg" in installed.run("bench", "--help").stdout


@pytest.fixture
def bare_pg(pg_admin_url: str) -> Iterator[str]:
    """An empty PostgreSQL database: the wheel's own `migrate` must build the schema."""
    url = create_pg_database(pg_admin_url)
    try:
        yield url
    finally:
        drop_pg_database(pg_admin_url, url)


def test_migrate_then_retention_on_postgresql(installed: Installed, bare_pg: str) -> None:
    assert "created the schema at revision" in installed.run("migrate", database_url=bare_pg).stdout
    with psycopg.connect(bare_pg) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        head = ScriptDirectory.from_config(alembic_config(bare_pg)).get_current_head()
        assert row == (head,)
        assert conn.execute("SELECT count(*) FROM inbox").fetchone() == (0,)
    done = installed.run("retention", "--json", database_url=bare_pg)
    assert json.loads(done.stdout)["already_running"] is False


@pytest.mark.server
def test_serve_on_sqlite_creates_and_migrates_its_file(installed: Installed) -> None:
    """The embedded default: `msgsync serve` with no settings at all, in a bare directory."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(installed.bin / "msgsync"), "serve", "--port", str(port)],
        cwd=installed.workdir,
        env=installed.env(**{k: str(v) for k, v in FAST_HASHING.items()}),
    )
    try:
        deadline = time.monotonic() + 60  # a guard against hanging, not a measurement
        with httpx.Client(timeout=1) as client:  # one client (and TLS context) for every try
            while True:
                assert process.poll() is None, "msgsync serve exited"
                assert time.monotonic() < deadline, "msgsync serve did not answer /healthz"
                try:
                    if client.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
        assert (installed.workdir / "msgsync.db").is_file()
        # The schema is there: a user can be created, and so a login.
        body = {"user_id": "first", "password": "first-contact"}
        assert httpx.post(f"{url}/users", json=body).status_code == 201
        assert httpx.post(f"{url}/login", json=body).status_code == 201
        # The docs' assets are packaged too, not only the pages that name them.
        for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            assert f"/docs-assets/{asset}" in httpx.get(f"{url}{page}").text
            assert httpx.get(f"{url}/docs-assets/{asset}").status_code == 200
        # So is the web client's build.
        for asset in ("", "app.js", "style.css", "favicon.svg"):
            assert httpx.get(f"{url}/app/{asset}").status_code == 200
    finally:
        stop_server(process)
    # The same file, found again by a second command from the same directory.
    done = installed.run("retention", "--json")
    assert json.loads(done.stdout)["deleted"] == 0


@pytest.mark.server
def test_the_test_harness_ships_and_runs_from_the_wheel(
    installed: Installed, pg_admin_url: str
) -> None:
    """app.testing is public: a project that installs msgsync tests against it with no
    checkout, its migrations found inside the package, on SQLite and on PostgreSQL."""
    script = """
import sys
import httpx
from app.testing import FAST_HASHING, running_server

admin = sys.argv[1]
with (
    running_server(env=FAST_HASHING) as lite,
    running_server(admin_url=admin, env=FAST_HASHING) as pg,
):
    body = {"user_id": "wheel-user", "password": "wheel-password"}
    print(httpx.post(f"{lite.url}/users", json=body).status_code, lite.database_url[:10])
    print(httpx.post(f"{pg.url}/users", json=body).status_code, pg.database_url[:10])
"""
    done = subprocess.run(
        [str(installed.bin / "python"), "-c", script, pg_admin_url],
        cwd=installed.workdir,
        env=installed.env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["201 sqlite:///", "201 postgresql"]
