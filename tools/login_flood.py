"""Memory of one worker under a flood of wrong-password logins (production Argon2 cost).

    ./tools/uv run python tools/login_flood.py [--logins 200] [--env NAME=VALUE ...]
    ./tools/uv run python tools/login_flood.py --url URL --seconds S [--logins 200]

Starts `msgsync serve --workers 1` (one process: the worker is the server process) on a
fresh PostgreSQL database, registers one user, sends the logins all at once, and prints the
answers' codes, the time they took, and the worker's peak (VmHWM) and current (VmRSS)
resident memory before and after. A figure of memory, not of speed.

With --url it instead keeps `--logins` wrong-password logins in flight against a running
server for S seconds (to run a workload beside the attack) and prints the answers' codes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.testing import free_port, stop_server, wait_ready
from tests.conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database


def memory(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmHWM", "VmRSS"}:
            found[name] = int(value.split()[0]) // 1024
    return found


async def flood(url: str, logins: int) -> tuple[collections.Counter[str], float]:
    limits = httpx.Limits(max_connections=logins, max_keepalive_connections=logins)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        response = await client.post("/users", json={"user_id": "victim", "password": "x" * 12})
        assert response.status_code == 201, response.text

        async def one(i: int) -> str:
            r = await client.post("/login", json={"user_id": "victim", "password": f"guess{i}"})
            return f"{r.status_code} {r.json().get('code')}"

        started = time.monotonic()
        codes = collections.Counter(await asyncio.gather(*(one(i) for i in range(logins))))
        return codes, time.monotonic() - started


async def sustained(url: str, logins: int, seconds: float) -> collections.Counter[str]:
    limits = httpx.Limits(max_connections=logins, max_keepalive_connections=logins)
    codes: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:

        async def attacker(i: int) -> None:
            while time.monotonic() < deadline:
                try:
                    r = await client.post("/login", json={"user_id": f"v{i}", "password": "guess"})
                except httpx.HTTPError as exc:
                    codes[type(exc).__name__] += 1
                    continue
                codes[f"{r.status_code} {r.json().get('code')}"] += 1

        async def report() -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(2)
                print(f"  flood: {dict(codes)}", file=sys.stderr, flush=True)

        await asyncio.gather(report(), *(attacker(i) for i in range(logins)))
    return codes


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--url", help="flood this running server instead")
    parser.add_argument("--seconds", type=float, default=60.0, help="with --url: how long")
    args = parser.parse_args()
    if args.url:
        codes = asyncio.run(sustained(args.url, args.logins, args.seconds))
        print(f"{sum(codes.values())} wrong-password logins in {args.seconds:.0f} s: {codes}")
        return 0
    url = create_pg_database(PG_ADMIN_URL)
    env = {**os.environ, "MSGSYNC_DATABASE_URL": url}
    env.update(item.split("=", 1) for item in args.env)
    try:
        subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, check=True)
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        server = f"http://127.0.0.1:{port}"
        try:
            wait_ready(server, process)
            before = memory(process.pid)
            codes, took = asyncio.run(flood(server, args.logins))
            after = memory(process.pid)
        finally:
            stop_server(process)
    finally:
        drop_pg_database(PG_ADMIN_URL, url)
    print(f"{args.logins} concurrent wrong-password logins in {took:.1f} s: {dict(codes)}")
    print(f"worker memory before: {before} MiB; after: {after} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
