"""The SDK's bench: catch-up of N entries into the SQLite store; entries/s and acks sent.

    python -m msgsync_client.bench [--server URL] [--entries 10000]

Without --server it starts a msgsync server on a fresh PostgreSQL database (this needs the
`msgsync` command installed beside the SDK, as in the repository's environment, and
PostgreSQL at $MSGSYNC_TEST_PG_ADMIN_URL or postgresql://root@127.0.0.1:5432/postgres)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from msgsync_client.client import Client, Options
from msgsync_client.sqlite_store import SqliteStore
from msgsync_client.testing import (
    FAST_HASHING,
    NO_THROTTLE,
    ServerFailed,
    fresh_database,
    running_server,
)

__all__ = ["main"]

PASSWORD = "bench-password-1"
SEND_RATE_ABOVE_BENCH = {"MSGSYNC_SEND_RATE": "1000000", "MSGSYNC_SEND_BURST": "1000000"}


async def _fill(server: str, sender: str, recipient: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        login = await http.post("/login", json={"user_id": sender, "password": PASSWORD})
        headers = {"authorization": f"Bearer {login.json()['access_token']}"}
        queue = iter(range(count))

        async def worker() -> None:
            for n in queue:
                response = await http.post(
                    "/messages", json={"to": recipient, "body": f"bench {n}"}, headers=headers
                )
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(8)))


async def run(server: str, entries: int, page_limit: int) -> dict[str, Any]:
    sender, recipient = (f"{p}-{uuid.uuid4().hex[:8]}" for p in ("bench-from", "bench-to"))
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        for user in (sender, recipient):
            (
                await http.post("/users", json={"user_id": user, "password": PASSWORD})
            ).raise_for_status()
    await _fill(server, sender, recipient, entries)
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "bench.db")
        client = Client(store, server, Options(page_limit=page_limit))
        await client.login(recipient, PASSWORD, "bench")
        started = time.perf_counter()
        result = await client.catch_up()
        elapsed = time.perf_counter() - started
        await client.flush_acks()
        acks = client.acker.sent_count
        await client.aclose()
    assert result.applied == entries, result.applied
    return {
        "entries": result.applied,
        "seconds": round(elapsed, 3),
        "entries_per_second": round(result.applied / elapsed),
        "pages": result.pages,
        "acks": acks,
        "page_limit": page_limit,
    }


@contextlib.contextmanager
def _own_server() -> Iterator[str]:
    """`msgsync serve` on a database of its own, with PostgreSQL's durable commits (what is
    deployed), hashing cheap and throttles off for the users it creates, and the send rate
    above the fill's."""
    admin = os.environ.get("MSGSYNC_TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
    env = {**FAST_HASHING, **NO_THROTTLE, **SEND_RATE_ABOVE_BENCH}
    with (
        fresh_database(admin, "msgsync_bench", durable=True) as database_url,
        running_server(database_url, env=env) as server,
    ):
        yield server.url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msgsync_client.bench")
    parser.add_argument("--server", help="an existing msgsync server (default: start one)")
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--page-limit", type=int, default=1000)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        try:
            server = args.server or stack.enter_context(_own_server())
        except ServerFailed as exc:  # no msgsync command, or a server that did not start
            raise SystemExit(f"no --server given and none could be started: {exc}") from None
        report = asyncio.run(run(server, args.entries, args.page_limit))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
