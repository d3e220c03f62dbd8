"""Probes and metrics for operators."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from app.api.deps import DbDep, NotifierDep
from app.errors import AppError
from app.schemas import Status

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=Status,
    operation_id="healthz",
    summary="Liveness: the process runs",
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Status,
    operation_id="readyz",
    summary="Readiness: the database answers",
)
async def readyz(db: DbDep) -> dict[str, str]:
    try:
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise AppError(503, "database_unavailable", f"database did not answer: {exc}") from exc
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    operation_id="metrics",
    summary="Prometheus metrics of this process",
)
async def metrics(notifier: NotifierDep, db: DbDep) -> str:
    """Prometheus text format, for this process (each worker answers for itself)."""
    lines = [
        "# HELP msgsync_waiting_long_polls Long-polls waiting in this process.",
        "# TYPE msgsync_waiting_long_polls gauge",
        f"msgsync_waiting_long_polls {notifier.waiting}",
        "# HELP msgsync_listener_up 1 when cross-process wake-ups are being received.",
        "# TYPE msgsync_listener_up gauge",
        f"msgsync_listener_up {int(notifier.healthy)}",
        "# HELP msgsync_db_pool_checked_out Database connections in use.",
        "# TYPE msgsync_db_pool_checked_out gauge",
        f"msgsync_db_pool_checked_out {db.connections_in_use()}",
    ]
    for name, value in sorted(notifier.stats.items()):
        lines += [f"# TYPE msgsync_{name}_total counter", f"msgsync_{name}_total {value}"]
    return "\n".join(lines) + "\n"
