"""Probes for operators (GET /metrics is in app.api.metrics)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import DbDep, NotifierDep
from app.problems import problem
from app.schemas import Status

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

# /readyz answers within a second whatever the database does (a load balancer's probe
# times out, and a probe that hangs says nothing): past this, the database is not ready.
READY_CHECK_SECONDS = 0.75


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


def _retrieve(check: asyncio.Future[None]) -> None:
    """An abandoned check's own failure is the one already reported: mark it retrieved."""
    if not check.cancelled():
        check.exception()


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

    async def select_one() -> None:
        async with db.statement() as conn:
            await conn.execute(text("SELECT 1"))

    # Shielded: the check runs on (bounded by the pool's wait and the connect timeout) when
    # the probe stops waiting, rather than be cancelled in the middle of a pool checkout.
    check = asyncio.ensure_future(select_one())
    try:
        async with asyncio.timeout(READY_CHECK_SECONDS):
            await asyncio.shield(check)
    except Exception as exc:
        check.add_done_callback(_retrieve)
        log.warning("readiness: the database did not answer: %r", exc)
        return _not_ready("the database did not answer")
    if not notifier.healthy:
        return _not_ready("the listener for cross-process wake-ups is not connected")
    if db.replicas:
        # Replicas are optional: one down or lagging is skipped, and the primary reads.
        return {"status": "ready", "replicas": db.replicas.status()}
    return {"status": "ready"}
