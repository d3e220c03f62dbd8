"""A real msgsync server (SQLite, one process) for the client's end-to-end tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from msgsync_client.testing import FAST_HASHING, NO_THROTTLE, running_server

PASSWORD = "client-test-password"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """`msgsync serve` on a fresh SQLite file; the tests register and log in many users from
    one address: no throttle."""
    with running_server(env={**FAST_HASHING, **NO_THROTTLE}) as server:
        yield server.url


def new_user(server_url: str, prefix: str) -> str:
    user_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    response = httpx.post(f"{server_url}/users", json={"user_id": user_id, "password": PASSWORD})
    response.raise_for_status()
    return user_id
