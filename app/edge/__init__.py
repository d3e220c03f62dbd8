"""The edge: everything a request crosses before FastAPI, and the server that feeds it.

    uvicorn + EdgeProtocol (app.edge.server)   read deadlines, head limits, before ASGI
      -> FrontDoor (frontdoor)                 request ids, CORS, gzip, latency, size limits
        -> HotPaths (hotpaths)                 plain POST /messages, POST /ack and GET /sync
                                               (its long-poll waits here, app.inbox.wait)
          -> FastAPI                           routers (app.api), error handlers, the rest

Each layer hands what it does not answer to the next; errors come back as the application
answers them (app.problems). `around` builds the stack from the middle out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from app.config import Settings

__all__ = ["around"]


def around(app: ASGIApp, settings: Settings) -> ASGIApp:
    """The edge's layers around FastAPI's own stack (`app`), as drawn above."""
    # Imported here, not at the top: app.problems (which the layers use) imports app.edge.paths,
    # and `msgsync serve` imports app.edge.server, which must not load prometheus_client
    # (app.metrics) before it has prepared the multiprocess directory (app.multiproc).
    from app.edge import hotpaths
    from app.edge.frontdoor import FrontDoor
    from app.edge.hotpaths import HotPaths

    return FrontDoor(HotPaths(app), settings, hotpaths.PATHS)
