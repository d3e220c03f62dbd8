"""GET /metrics: the whole server's series (app.metrics), every worker's summed up."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from app.errors import AppError
from app.metrics import LATENCIES, Sampler
from app.multiproc import MULTIPROC_DIR
from app.openapi import problem_responses

__all__ = ["router"]


router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    operation_id="getMetrics",
    summary="Prometheus metrics of every worker",
    responses={
        200: {"description": "Prometheus text format (OpenMetrics when asked for)"},
        **problem_responses("unauthorized"),
    },
)
async def metrics(request: Request) -> Response:
    """The whole server's metrics (every worker's), for Prometheus. Public unless
    MSGSYNC_METRICS_TOKEN is set: then it asks for `Authorization: Bearer <that token>`
    (not a device's token)."""
    token: str = request.app.state.settings.metrics_token
    if token and not _holds(request.headers.get("authorization", ""), token):
        raise AppError(401, "unauthorized", "/metrics needs the metrics token")
    sampler: Sampler = request.app.state.metrics
    sampler.sample()
    LATENCIES.write()
    path = os.environ.get(MULTIPROC_DIR)
    registry = REGISTRY if not path else _multiprocess_registry(path)
    # The format the scraper asks for in Accept: Prometheus text 0.0.4 by default, which
    # every version of Prometheus reads; OpenMetrics or text 1.0.0 when asked.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), media_type=content_type)


def _holds(authorization: str, token: str) -> bool:
    """Whether an Authorization header carries `token` as a bearer token (in constant time:
    the comparison tells nothing about how much of a guess was right)."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        given.strip().encode(), token.encode()
    )


def _multiprocess_registry(path: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    pids = _worker_pids(path)
    for pid in pids - _alive(pids):
        # A worker that was killed could not say so: drop its gauges from the sums.
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    registry.register(_WorkerProcesses(path))
    PlatformCollector(registry=registry)
    return registry


_FILE_PID = re.compile(r"_(\d+)\.db$")


def _worker_pids(path: str) -> set[int]:
    return {int(m[1]) for name in os.listdir(path) if (m := _FILE_PID.search(name))}


def _alive(pids: Iterable[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


class _WorkerProcesses(Collector):
    """process_* series (CPU, memory, open files) of every live worker, labelled by pid:
    prometheus_client's own ProcessCollector only sees the scraping process."""

    def __init__(self, path: str) -> None:
        self._path = path

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for pid in sorted(_alive(_worker_pids(self._path))):
            collector = ProcessCollector(pid=_constant(pid), registry=None)
            for family in collector.collect():
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for s in family.samples:
                    into.add_sample(s.name, {**s.labels, "pid": str(pid)}, s.value)
        return merged.values()


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid
