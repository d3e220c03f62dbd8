"""The connection budget, stated at start-up and checked against the server's limit."""

from __future__ import annotations

import psycopg
import sqlalchemy.exc

from app.config import Settings
from app.db.engine import ConnectionBudget
from app.notifier import libpq_url

__all__ = ["OUTAGES", "budget_report", "first_line"]

# The database unreachable or out of connections (a pool timeout included): not a bug.
OUTAGES = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def budget_report(settings: Settings, workers: int) -> list[str]:
    """Lines for `msgsync serve`'s start-up log: the formula, and a warning when this host
    alone could take more connections than PostgreSQL has left for it."""
    budget = ConnectionBudget.of(settings)
    lines = [f"connection budget: {budget.formula(workers)}"]
    pooled = settings.session_url != settings.database_url
    # Behind a pooler only the listen/notify sessions reach PostgreSQL directly; the
    # statement connections are the pooler's clients (size its pool by the same formula).
    direct = workers * (budget.sessions if pooled else budget.per_worker)
    try:
        with psycopg.connect(libpq_url(settings.session_url), connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT current_setting('max_connections')::int,"
                " current_setting('superuser_reserved_connections')::int,"
                " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
                " - 1"
            ).fetchone()
    except psycopg.Error as exc:
        lines.append(f"could not read the server's max_connections: {first_line(exc)}")
        return lines
    assert row is not None
    limit, reserved, in_use = (int(v) for v in row)
    room = limit - reserved - in_use
    lines.append(
        f"PostgreSQL allows {limit - reserved} connections (max_connections {limit} - "
        f"{reserved} reserved), {in_use} in use now; this host opens at most {direct}"
        + (" directly (statements go through the pooler)" if pooled else "")
    )
    if direct > room:
        lines.append(
            f"WARNING: this host may need {direct} connections but only {room} are free: "
            "requests will fail with 503 database_unavailable once they run out. Lower "
            "MSGSYNC_DB_POOL_SIZE or --workers, raise max_connections, or put PgBouncer in "
            "front (see docs/deployment.md)"
        )
    return lines


def first_line(exc: BaseException) -> str:
    """A driver error as one line: the message an operator needs, without SQL or traceback."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__
