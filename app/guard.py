"""The outermost layer: no exception reaches the server, so no failure costs the client its
keep-alive connection."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import unexpected_error_response

__all__ = ["LastResort"]

log = logging.getLogger(__name__)


class LastResort:
    """Answers what escaped every inner layer as problem details, and logs it.

    uvicorn closes the connection when the application raises after it started a response,
    and Starlette's ServerErrorMiddleware does exactly that: it sends the 500 problem and
    then re-raises the exception for the server's log. The client's next request on that
    keep-alive connection then met a reset. Here the exception is logged instead, and the
    connection stays open. A failure before any answer (in app.hotpaths or app.longpoll,
    outside the framework's handlers) is answered here as the application would answer it.
    A response cut off half-way is left as it is: uvicorn closes that connection, the only
    way to tell the client it is incomplete.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await unexpected_error_response(exc)(scope, receive, send)
