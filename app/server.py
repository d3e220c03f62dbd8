"""Running the service under uvicorn, one process or several."""

from __future__ import annotations

import sys

import uvicorn

from app.config import Settings

__all__ = ["serve"]


def serve(host: str, port: int, workers: int) -> int:
    settings = Settings()
    if workers > 1 and settings.is_sqlite:
        print(
            "msgsync: SQLite serves one process only; run with --workers 1, or set "
            "MSGSYNC_DATABASE_URL to a postgresql:// URL for several workers",
            file=sys.stderr,
        )
        return 2
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    return 0
