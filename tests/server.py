"""A real msgsync server (uvicorn, one or more processes) for tests that cross HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from app.bench.server import free_port, stop_server, wait_ready
from tests.conftest import FAST_HASHING, NO_SEND_RATE, NO_THROTTLE


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def running_server(
    database_url: str, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[Server]:
    port = free_port()
    environment = {
        **os.environ,
        "MSGSYNC_DATABASE_URL": database_url,
        **{
            f"MSGSYNC_{k.upper()}": str(v)
            for k, v in {**FAST_HASHING, **NO_THROTTLE, **NO_SEND_RATE}.items()
        },
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=environment,
    )
    server = Server(f"http://127.0.0.1:{port}", process)
    try:
        wait_ready(server.url, process)
        yield server
    finally:
        stop_server(process)
