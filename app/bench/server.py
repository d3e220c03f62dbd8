"""The bench's own server: a fresh PostgreSQL database, a uvicorn subprocess, full teardown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

from app.bench.stats import BenchError
from app.migrations import upgrade_to_head

__all__ = [
    "ManagedServer",
    "free_port",
    "managed_server",
    "process_cpu_seconds",
    "server_pids",
    "server_rss_kib",
    "stop_server",
    "wait_ready",
]

# The bench creates thousands of users; with the production Argon2 cost (64 MiB, 3 passes
# per hash) setting them up would take minutes and measure the hasher, not the sync path.
CHEAP_HASHING = {
    "MSGSYNC_ARGON2_TIME_COST": "1",
    "MSGSYNC_ARGON2_MEMORY_KIB": "64",
    "MSGSYNC_ARGON2_PARALLELISM": "1",
}
# It also registers and logs them in from one address, which the login and registration
# throttles (app.throttle) would refuse after a few dozen.
NO_THROTTLE = {
    "MSGSYNC_REGISTRATIONS_PER_ADDRESS": "0",
    "MSGSYNC_LOGIN_ATTEMPTS_PER_ADDRESS": "0",
    "MSGSYNC_LOGIN_ATTEMPTS_PER_ACCOUNT": "0",
}

# Its senders send far faster than a person: the per-user send rate (app.rates) is set above
# any bench's rate rather than off, so that W1 still pays for the check it measures.
SEND_RATE_ABOVE_BENCH = {
    "MSGSYNC_SEND_RATE": "1000000",
    "MSGSYNC_SEND_BURST": "1000000",
}


@dataclass(frozen=True)
class ManagedServer:
    url: str
    pid: int
    database_url: str  # plain postgresql:// URL of the bench's own database
    log_path: Path


def _database_url(admin_url: str, name: str) -> str:
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path | None = None) -> None:
    """Until the server's /readyz answers 200; fails if the process exits first."""
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise BenchError(f"server exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise BenchError("server did not become ready in 60 s")
        time.sleep(0.1)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def managed_server(
    admin_url: str, workers: int, extra_env: dict[str, str] | None = None
) -> Iterator[ManagedServer]:
    """Create and migrate msgsync_bench_<random>, serve it, then stop and drop it, always."""
    name = f"msgsync_bench_{uuid.uuid4().hex[:10]}"
    database_url = _database_url(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    process: subprocess.Popen[bytes] | None = None
    fd, name_of_log = tempfile.mkstemp(prefix="msgsync-bench-server-", suffix=".log")
    log_path = Path(name_of_log)
    failed = True
    try:
        print(f"bench: database {name}, migrating", file=sys.stderr)
        upgrade_to_head(database_url)
        port = free_port()
        env = {
            **os.environ,
            "MSGSYNC_DATABASE_URL": database_url,
            **CHEAP_HASHING,
            **NO_THROTTLE,
            **SEND_RATE_ABOVE_BENCH,
            **(extra_env or {}),
        }
        command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--workers", str(workers)], env=env, stdout=fd, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, log_path)
        print(f"bench: server {url} pid {process.pid}, log {log_path}", file=sys.stderr)
        yield ManagedServer(url, process.pid, database_url, log_path)
        failed = False
    finally:
        if process is not None:
            stop_server(process)
        os.close(fd)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"bench: server stopped, database {name} dropped", file=sys.stderr)
        if failed:
            print(f"bench: the server's log is kept at {log_path}", file=sys.stderr)
        else:
            log_path.unlink(missing_ok=True)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: ppid follows the last ')'.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def server_rss_kib(pid: int | None) -> dict[str, int] | None:
    """VmRSS of the server process and all its descendants (uvicorn's workers), in KiB."""
    if pid is None:
        return None
    rss: dict[str, int] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[str(current)] = int(line.split()[1])
        todo.extend(_children(current))
    return rss or None


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(_children(current))
    return found


def process_cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes (live ones only), from /proc: robust on
    a shared machine, unlike wall time. None when none can be read."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, read = 0, False
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
        read = True
    return total / ticks if read else None


def server_pids(pid: int | None) -> list[int]:
    """The server process and all its descendants (uvicorn's workers)."""
    return [] if pid is None else _descendants(pid)
