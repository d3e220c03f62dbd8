"""The `msgsync` command: serve, migrate, retention, bench.

Its help is for the people who run msgsync: what each command does, in their words."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

from app.bench.options import add_arguments as add_bench_arguments

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from app.config import Settings

    # Read before the server's own modules are loaded: a setting the operator got wrong is
    # said without loading them.
    settings = Settings()
    from app.edge import server

    return server.serve(
        settings, host=args.host, port=args.port, workers=args.workers, access_log=args.access_log
    )


def _migrate(_: argparse.Namespace) -> int:
    from sqlalchemy import make_url

    from app.config import Settings
    from app.db.migrations import upgrade_to_head

    settings = Settings()
    # Schema changes want a direct session (DDL and Alembic's own statements through a
    # transaction pooler would meet the prepared-statement and session-state problems).
    url = settings.session_url
    done = upgrade_to_head(url)
    # The database as a person would name it: no password, no driver (+psycopg, +aiosqlite).
    parsed = make_url(url)
    shown = parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)
    print(f"msgsync migrate: {shown}: {done.describe()}")
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`7d`, `12h`, `30m`, `3600s` or plain seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 7d, 12h, 30m or 3600s")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2] or "s"])


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _positive(text: str) -> int:
    count = _count(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return count


def _retention(args: argparse.Namespace) -> int:
    from app.config import Settings
    from app.db.budget import OUTAGES, first_line
    from app.inbox.retention import AlreadyRunning, prune, remove_idle_devices
    from app.store import backend_for, open_database

    settings = Settings()
    # `is None`, not `or`: --max-age 0 is a real request (everything old enough goes), and
    # timedelta(0) is falsy.
    max_age = (
        timedelta(seconds=settings.retention_max_age_seconds)
        if args.max_age is None
        else args.max_age
    )
    max_entries = settings.retention_max_entries if args.max_entries is None else args.max_entries
    if backend_for(settings).migrates_at_start:
        # Imported here, as in `serve`: Alembic is for the databases migrated at start.
        from app.db.migrations import upgrade_to_head

        # The embedded default creates its file on first use, as `serve` does.
        upgrade_to_head(settings.database_url)

    async def run() -> int:
        db = open_database(settings)
        try:
            report = await prune(
                db,
                max_age,
                max_entries,
                dry_run=args.dry_run,
                batch_users=settings.retention_batch_users,
                batch_entries=args.batch_entries or settings.retention_batch_entries,
                wait=args.wait,
            )
            idle = await remove_idle_devices(db, settings.device_idle_days, dry_run=args.dry_run)
        except OUTAGES as exc:
            # Out of connections, or the database down: one line for cron's mail, exit 1.
            print(f"retention: the database did not answer: {first_line(exc)}", file=sys.stderr)
            return 1
        except AlreadyRunning:
            # Not a failure: the other run is doing this work. Exit 0 so cron stays quiet.
            if args.json:
                print(json.dumps({"already_running": True}))
            else:
                print("retention: another run holds the lock on this database; nothing done")
            return 0
        finally:
            await db.dispose()
        if args.json:
            print(
                json.dumps(
                    {
                        "already_running": False,
                        **report.as_dict(),
                        "device_idle_days": idle.idle_days,
                        "idle_devices_removed": idle.removed,
                    }
                )
            )
        else:
            verb = "would delete" if report.dry_run else "deleted"
            print(
                f"retention: {verb} {report.deleted} entries "
                f"({report.deleted_by_age} by age, {report.deleted_by_count} by count) "
                f"of {report.users_touched} users in {report.transactions} transactions, "
                f"{report.elapsed_seconds:.2f} s "
                f"(older than {report.cutoff}, newest {report.max_entries} kept)"
            )
            if idle.idle_days:
                print(
                    f"retention: {'would remove' if report.dry_run else 'removed'} "
                    f"{idle.removed} devices unused for more than {idle.idle_days} days "
                    f"(last seen before {idle.cutoff})"
                )
            else:
                print("retention: idle devices are kept (MSGSYNC_DEVICE_IDLE_DAYS=0)")
        return 0

    return asyncio.run(run())


def _bench(args: argparse.Namespace) -> int:
    from app.bench.options import from_args
    from app.bench.runner import run

    return run(from_args(args))


def _version() -> str:
    try:
        return version("msgsync")
    except PackageNotFoundError:  # a checkout on sys.path without an install
        return "unknown"


class _CommandsFormatter(argparse.HelpFormatter):
    """Each command's description on the line of its name. argparse aligns the descriptions
    without counting the indent of a command's name, so that a long one (`retention`)
    would have its description pushed to the next line."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        for command in getattr(action, "_get_subactions", list)():
            width = len(self._format_action_invocation(command)) + self._current_indent + 2
            self._action_max_length = max(self._action_max_length, width)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msgsync",
        description="msgsync: an offline-message sync server for a messenger (one-to-one and "
        "groups). "
        "Phones and browsers fetch the messages they missed, wait for new ones and "
        "acknowledge what they stored, over an HTTP API.",
        epilog="Settings come from MSGSYNC_* environment variables or a .env file in the "
        "working directory (MSGSYNC_DATABASE_URL: where the data lives; default a SQLite "
        "file ./msgsync.db). `msgsync COMMAND --help` tells more about a command.",
        formatter_class=_CommandsFormatter,
    )
    parser.add_argument("--version", action="version", version=f"msgsync {_version()}")
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )

    serve = commands.add_parser(
        "serve",
        help="run the server (API, web client at /app, docs at /docs)",
        description="Serve the HTTP API. Change the address with --host and --port, e.g. "
        "`msgsync serve --host 0.0.0.0 --port 9000`. The database and every other setting "
        "come from MSGSYNC_* environment variables or a .env file in the working directory "
        "(MSGSYNC_DATABASE_URL, default: a SQLite file ./msgsync.db, created and migrated "
        "at start-up).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes (PostgreSQL only when more than 1)"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Bring the database's schema to the one this msgsync needs: create it "
        "on an empty database, apply the new migrations to an older one, or do nothing. It "
        "says which. `serve` does this by itself on SQLite; on PostgreSQL run it before "
        "starting a new version.",
    )
    migrate.set_defaults(run=_migrate)

    retention = commands.add_parser(
        "retention",
        help="delete old sync entries and unused devices (for cron)",
        description="Delete inbox entries older than --max-age and all but the newest "
        "--max-entries per user, in bounded batches; raise each user's floor with its deletes. "
        "Remove the devices unused for MSGSYNC_DEVICE_IDLE_DAYS days (0: keep them). "
        "Exit status 0 on success, and also when another run holds the lock (it says so); "
        "1 on an error.",
    )
    retention.add_argument(
        "--max-age",
        type=parse_duration,
        help="delete entries older than this (7d, 12h, 30m, 3600s; default from settings: "
        "MSGSYNC_RETENTION_MAX_AGE_SECONDS)",
    )
    retention.add_argument(
        "--max-entries",
        type=_count,
        help="keep at most this many newest entries per user "
        "(default from settings: MSGSYNC_RETENTION_MAX_ENTRIES)",
    )
    retention.add_argument(
        "--batch-entries",
        type=_positive,
        help="delete at most this many entries per transaction; on SQLite this bounds how "
        "long sends wait for the write lock (default from settings: "
        "MSGSYNC_RETENTION_BATCH_ENTRIES)",
    )
    retention.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    retention.add_argument("--json", action="store_true", help="print one JSON object")
    retention.add_argument(
        "--wait",
        action="store_true",
        help="wait for a concurrent run to finish instead of exiting (PostgreSQL)",
    )
    retention.set_defaults(run=_retention)

    bench = commands.add_parser(
        "bench",
        help="load-test a server and check that no message is lost",
        description="Load-test msgsync over real HTTP and print the figures: send "
        "throughput (W1), catching up after being offline (W2), how fast a waiting device "
        "is woken (W3), many idle waiting devices (W4), acknowledgements (W5), retention "
        "beside sends (W6) and push notifications (W7). With --pg it serves a fresh "
        "database of its own, with cheap password hashing because it creates thousands of "
        "users. Any lost, duplicated or reordered message fails the run.",
    )
    add_bench_arguments(bench)
    bench.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # A setting the operator got wrong: say which and why, without a traceback.
        for error in exc.errors():
            name = "MSGSYNC_" + "_".join(str(part) for part in error["loc"]).upper()
            reason = str(error["msg"]).removeprefix("Value error, ")
            print(f"msgsync: invalid setting {name}: {reason}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
