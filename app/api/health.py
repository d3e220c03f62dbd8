"""Probes for operators (the metrics are in app.api.metrics)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import DbDep, NotifierDep
from app.errors import problem
from app.schemas import Status

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get(
    "/healthz",
    response_model=Status,
    operation_id="getHealth",
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
    operation_id="getReadiness",
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
