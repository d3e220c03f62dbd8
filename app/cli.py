"""The `msgsync` command: serve, migrate, bench (and, as it lands, retention)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.bench.options import add_arguments as add_bench_arguments

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from app import server

    return server.serve(
        host=args.host, port=args.port, workers=args.workers, access_log=args.access_log
    )


def _migrate(_: argparse.Namespace) -> int:
    from app.config import Settings
    from app.migrations import upgrade_to_head

    settings = Settings()
    upgrade_to_head(settings.database_url)
    print("database is at the latest schema")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from app.bench.options import from_args
    from app.bench.runner import run

    return run(from_args(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msgsync", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers", type=int, default=1, help="processes (PostgreSQL only when more than 1)"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the latest")
    migrate.set_defaults(run=_migrate)

    bench = commands.add_parser(
        "bench",
        help="measure the issue-6 workloads over HTTP, verifying every message",
        description="Measure send throughput (W1), catch-up (W2), wake latency (W3), idle "
        "long-polls (W4), batch ack (W5) and retention (W6) over real HTTP. With --pg it "
        "serves a fresh database of its own, with cheap password hashing because it creates "
        "thousands of users. Any lost, duplicated or reordered message fails the run.",
    )
    add_bench_arguments(bench)
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
