"""Running the service under uvicorn, one process or several."""

from __future__ import annotations

import resource
import sys

import uvicorn

from app.config import Settings
from app.logs import log_config
from app.multiproc import prepare_multiprocess

__all__ = ["serve"]


def serve(host: str, port: int, workers: int, access_log: bool = False) -> int:
    settings = Settings()
    if workers > 1 and settings.is_sqlite:
        print(
            "msgsync: SQLite serves one process only; run with --workers 1, or set "
            "MSGSYNC_DATABASE_URL to a postgresql:// URL for several workers",
            file=sys.stderr,
        )
        return 2
    _raise_open_file_limit()
    prepare_multiprocess(workers)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        # One format (MSGSYNC_LOG_FORMAT) for uvicorn's lines and the service's, each with
        # the request id.
        log_config=log_config(settings.log_format),
        # A line per request costs a measurable share of a small request's CPU; off unless
        # asked for (a proxy in front usually logs requests already).
        access_log=access_log,
        # Long-polls are answered at SIGTERM (see notifier.close_on_signals); this bounds the
        # wait for any other request still in flight.
        timeout_graceful_shutdown=5,
        # Thousands of idle devices reconnect at once after a deploy.
        backlog=4096,
    )
    return 0


def _raise_open_file_limit() -> None:
    """Every waiting device holds a socket: allow as many as the hard limit permits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
