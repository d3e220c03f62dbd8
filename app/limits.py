"""The request-size limit: one rule for every path, applied before any body is read."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem

__all__ = ["RequestSizeLimit"]


class RequestSizeLimit:
    """413 request_too_large for a body over `max_bytes`, whichever path would answer.

    A `Content-Length` above the limit is refused from the header, before the body is read.
    A chunked body (no length announced) is read here, up to the limit, before anything
    inside sees it: past the limit it is refused; within it, it is handed on whole. Reading
    it here rather than counting it as the application reads is what makes the rule one:
    the framework turns any failure while reading a body into 400, and the hot paths would
    each need their own count. A body with a `Content-Length` within the limit is left to
    the server, which reads no more than that length.

    FastAPI's own max_body_size answers with text/plain; the contract promises every error
    as problem+json with a stable code.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)  # gone: the application sees it as it came
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            messages.append(message)
            if not message.get("more_body", False):
                body = b"".join(m.get("body", b"") for m in messages)
                messages = [{"type": "http.request", "body": body, "more_body": False}]
                break
        await self.app(scope, _replay(messages, receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413, "request_too_large", f"request body is larger than {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands out the messages already read, then the server's."""
    pending = messages[::-1]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
