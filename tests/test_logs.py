"""Log lines: plain text by default, JSON with MSGSYNC_LOG_FORMAT=json; the request id in
both, on uvicorn's lines and the service's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.testing import free_port, stop_server, wait_ready
from tests.conftest import FAST_HASHING
from tests.factories import register

pytestmark = pytest.mark.server


@contextmanager
def logging_server(database_url: str, log: Path, **env: str) -> Iterator[str]:
    """A one-process server with its access log on, writing its log to `log`."""
    port = free_port()
    environment = {
        **os.environ,
        "MSGSYNC_DATABASE_URL": database_url,
        **{f"MSGSYNC_{k.upper()}": str(v) for k, v in FAST_HASHING.items()},
        **env,
    }
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--access-log"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=environment, stderr=sink, stdout=sink)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, process, log)
            yield url
        finally:
            stop_server(process)


def _lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.strip()]


async def test_json_lines_carry_level_time_logger_and_request_id(
    fresh_pg: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with logging_server(fresh_pg, log, MSGSYNC_LOG_FORMAT="json") as url:
        async with httpx.AsyncClient(base_url=url) as client:
            device = await register(client)
            ok = await client.get("/healthz", headers={"X-Request-Id": "trace-json-1"})
            assert ok.status_code == 200
            # A wrong password re-entered to end a device is logged by the service itself.
            failed = "wrong-password-1"
            response = await client.request(
                "DELETE",
                f"/devices/{device.device_id}",
                json={"password": "not the password"},
                headers={**device.headers, "X-Request-Id": failed},
            )
            assert response.status_code == 401
    records: list[dict[str, Any]] = [json.loads(line) for line in _lines(log)]
    for record in records:
        assert {"level", "time", "logger", "message", "request_id"} <= record.keys(), record
        datetime.fromisoformat(record["time"])
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any(
        r["request_id"] == "trace-json-1" and "GET /healthz" in r["message"] for r in access
    ), access
    started = [r for r in records if r["message"] == "Application startup complete."]
    assert started[0]["logger"] == "uvicorn.error"
    assert started[0]["request_id"] == "-"
    logged = [r for r in records if r["request_id"] == failed and r["logger"].startswith("app")]
    assert logged, records
    assert logged[0]["level"] == "INFO"
    assert "wrong password" in logged[0]["message"]


async def test_text_lines_by_default_with_the_request_id(
    postgresql_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with logging_server(postgresql_url, log) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            ok = await client.get("/healthz", headers={"X-Request-Id": "trace-text-1"})
            generated = (await client.get("/healthz")).headers["x-request-id"]
            assert ok.status_code == 200
    lines = _lines(log)
    assert not any(line.startswith("{") for line in lines)
    assert any("uvicorn.access [trace-text-1]" in line and "GET /healthz" in line for line in lines)
    assert any(f"uvicorn.access [{generated}]" in line for line in lines)
    assert any("INFO uvicorn.error [-] Application startup complete." in line for line in lines)
