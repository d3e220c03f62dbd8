"""A real msgsync server (uvicorn, one or more processes) for tests that cross HTTP: the
public harness (app.testing) with the suite's settings (fast hashing, no throttles, no send
rate, no prewarmed pool; a test's own `env` overrides them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app import testing
from app.testing import Server

__all__ = ["Server", "running_server"]

SUITE_ENV = {
    **testing.FAST_HASHING,
    **testing.NO_THROTTLE,
    **testing.NO_SEND_RATE,
    **testing.NO_PREWARM,
}


@contextmanager
def running_server(
    database_url: str, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Serve database_url (the test's, already migrated) until the block ends."""
    with testing.running_server(
        database_url, workers=workers, env={**SUITE_ENV, **(env or {})}
    ) as server:
        yield server
