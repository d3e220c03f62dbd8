"""The bench's own server: a fresh PostgreSQL database, a uvicorn subprocess, full teardown
(app.testing does the work), and what the bench reads of the server's processes in /proc."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.bench.stats import BenchError
from app.testing import FAST_HASHING, NO_THROTTLE, ServerFailed, fresh_database, start_server

__all__ = [
    "ManagedServer",
    "managed_server",
    "process_cpu_seconds",
    "server_pids",
    "server_rss_kib",
]

# The bench creates thousands of users (with the production Argon2 cost setting them up
# would measure the hasher, not the sync path) and registers and logs them in from one
# address, which the login and registration throttles would refuse after a few dozen.
# Its senders send far faster than a person: the per-user send rate (app.inbox.rates) is set above
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


@contextmanager
def managed_server(
    admin_url: str, workers: int, extra_env: dict[str, str] | None = None
) -> Iterator[ManagedServer]:
    """Create and migrate msgsync_bench_<random>, serve it, then stop and drop it, always.

    The database keeps PostgreSQL's durable commits: the bench measures what is deployed."""
    fd, name_of_log = tempfile.mkstemp(prefix="msgsync-bench-server-", suffix=".log")
    os.close(fd)
    log_path = Path(name_of_log)
    failed = True
    try:
        print("bench: creating and migrating a database", file=sys.stderr)
        with (
            fresh_database(admin_url, "msgsync_bench", durable=True) as database_url,
            log_path.open("ab") as log,
        ):
            name = database_url.rpartition("/")[2]
            env = {**FAST_HASHING, **NO_THROTTLE, **SEND_RATE_ABOVE_BENCH, **(extra_env or {})}
            try:
                server = start_server(
                    database_url, workers=workers, env=env, log=log, log_path=log_path
                )
            except ServerFailed as exc:
                raise BenchError(str(exc)) from exc
            print(
                f"bench: database {name}, server {server.url} pid {server.pid}, log {log_path}",
                file=sys.stderr,
            )
            try:
                yield ManagedServer(server.url, server.pid, database_url, log_path)
                failed = False
            finally:
                server.stop()
        print(f"bench: server stopped, database {name} dropped", file=sys.stderr)
    finally:
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
