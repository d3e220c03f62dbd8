"""Runs the chosen workloads against --url or a server of its own, then reports and verifies."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from app.bench.context import Context
from app.bench.conversations import w9
from app.bench.groups import w8
from app.bench.longpoll import w3, w4
from app.bench.options import Options
from app.bench.push import w7
from app.bench.report import table
from app.bench.retention import w6
from app.bench.server import managed_server
from app.bench.stats import PERCENTILE_METHOD, BenchError
from app.bench.throughput import w1, w2, w5
from app.testing import free_port

__all__ = ["run"]

WORKLOADS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "W5": w5,
    "W6": w6,
    "W7": w7,
    "W8": w8,
    "W9": w9,
}


def _servers(options: Options) -> list[tuple[tuple[str, ...], bool]]:
    """With --pg: the workloads each started server runs, and whether it serves push.

    Push (the push worker and the synced positions it reads) runs only where a workload
    measures it, so that it costs no other figure: W7 gets a server of its own, and W1 runs
    with push on only with --w1-push."""
    others = tuple(name for name in options.only if name != "W7")
    servers = [(others, options.w1_push and "W1" in others)] if others else []
    if "W7" in options.only:
        servers.append((("W7",), True))
    return servers


async def _run_all(
    ctx: Context, results: dict[str, dict[str, Any]], workloads: tuple[str, ...]
) -> None:
    for name in workloads:
        print(f"bench: {name}", file=sys.stderr, flush=True)
        began = time.perf_counter()
        results[name] = await WORKLOADS[name](ctx)
        print(f"bench: {name} done in {time.perf_counter() - began:.1f} s", file=sys.stderr)


def _write_json(path: str, report: dict[str, Any]) -> None:
    Path(path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def _terminate(signum: int, _: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so the server is stopped and its database dropped.
    raise SystemExit(128 + signum)


def run(options: Options) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(options)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(options: Options) -> int:
    run_id = uuid.uuid4().hex[:8]
    results: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {
        "run_id": run_id,
        "started_at": datetime.now(UTC).isoformat(),
        "target": {"url": options.url, "pg": options.pg is not None, "workers": options.workers},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "options": asdict(options),
        "percentiles": PERCENTILE_METHOD,
        "workloads": results,
    }
    error: BaseException | None = None
    try:
        port = options.push_gateway_port
        if options.pg is not None:
            # The server must allow the bench's push gateway, on a port chosen now.
            port = port or free_port()
            push_env = {
                "MSGSYNC_PUSH_GATEWAYS": f"http://127.0.0.1:{port}/",
                "MSGSYNC_PUSH_DELAY_SECONDS": str(options.push_delay),
            }
            limits = {}
            if options.group_fanout_limit is not None:
                limits["MSGSYNC_GROUP_FANOUT_LIMIT"] = str(options.group_fanout_limit)
            for workloads, push in _servers(options):
                with managed_server(
                    options.pg, options.workers, {**limits, **(push_env if push else {})}
                ) as server:
                    report["target"]["url"] = server.url
                    ctx = Context(
                        server.url, run_id, options, server.pid, server.database_url, port
                    )
                    _run_client(_run_all(ctx, results, workloads))
        else:
            assert options.url is not None
            url = options.url.rstrip("/")
            ctx = Context(url, run_id, options, options.server_pid, gateway_port=port)
            _run_client(_run_all(ctx, results, options.only))
    except (BenchError, OSError, httpx.HTTPError, psycopg.Error) as exc:
        error = exc
    report["ok"] = error is None
    if error is not None:
        report["error"] = f"{type(error).__name__}: {error}"
    if options.json_path:
        _write_json(options.json_path, report)
    if results:
        print(table(results))
    if error is not None:
        print(f"\nbench FAILED: {report['error']}", file=sys.stderr)
        return 1
    return 0


def _run_client(main: Coroutine[Any, Any, None]) -> None:
    """The client runs on uvloop where it is installed (it comes with uvicorn[standard]): it
    shares the machine with the server it measures. Three runs each of W1 and W5, medians:
    1890 -> 1971 messages/s, 13270 -> 15345 acks/s."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
