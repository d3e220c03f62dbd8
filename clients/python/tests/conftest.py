"""A real msgsync server (SQLite, one process) for the client's end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.bench.server import free_port, stop_server, wait_ready
from app.config import Settings
from app.migrations import upgrade_to_head

PASSWORD = "client-test-password"


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path: Path = tmp_path_factory.mktemp("server") / "msgsync.db"
    url = f"sqlite:///{path}"
    upgrade_to_head(Settings(database_url=url).database_url)
    port = free_port()
    env = {
        **os.environ,
        "MSGSYNC_DATABASE_URL": url,
        "MSGSYNC_ARGON2_TIME_COST": "1",
        "MSGSYNC_ARGON2_MEMORY_KIB": "64",
        "MSGSYNC_ARGON2_PARALLELISM": "1",
        # The tests register and log in many users from one address: no throttle.
        "MSGSYNC_REGISTRATIONS_PER_ADDRESS": "0",
        "MSGSYNC_LOGIN_ATTEMPTS_PER_ADDRESS": "0",
        "MSGSYNC_LOGIN_ATTEMPTS_PER_ACCOUNT": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        yield base
    finally:
        stop_server(process)


def new_user(server_url: str, prefix: str) -> str:
    user_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    response = httpx.post(f"{server_url}/users", json={"user_id": user_id, "password": PASSWORD})
    response.raise_for_status()
    return user_id
