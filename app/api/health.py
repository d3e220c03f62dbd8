"""Probes and metrics for operators."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from app.api.deps import DbDep, NotifierDep
from app.errors import problem
from app.schemas import Status

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)


@router.get(
    "/healthz",
    response_model=Status,
    operation_id="healthz",
    summary="Liveness: the process runs",
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _not_ready(detail: str) -> JSONResponse:
    # The body names the failing part only: driver messages carry hosts, ports and SQL.
    return problem(503, "database_unavailable", detail, headers={"Retry-After": "1"})


@router.get(
    "/readyz",
    response_model=None,
    operation_id="readyz",
    summary="Readiness: the database answers and wake-ups cross processes",
    responses={200: {"model": Status}},
)
async def readyz(db: DbDep, notifier: NotifierDep) -> dict[str, Any] | JSONResponse:
    """Ready when the database answers and cross-process wake-ups are being received: a
    process whose listener is down would let long-polls sleep through messages."""
    try:
        async with db.statement() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness: the database did not answer: %s", exc)
        return _not_ready("the database did not answer")
    if not notifier.healthy:
        return _not_ready("the listener for cross-process wake-ups is not connected")
    if db.replicas:
        # Replicas are optional: one down or lagging is skipped, and the primary reads.
        return {"status": "ready", "replicas": db.replicas.status()}
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
