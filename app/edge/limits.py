"""The request-size limit: one rule for every path, applied before any body is read.

413 request_too_large for a body over the limit, whichever path would answer. The front
door (app.edge.frontdoor) refuses a `Content-Length` above the limit from the header, before the
body is read. A chunked body (no length announced) is read there, up to the limit, before
anything inside sees it (read_within): past the limit it is refused; within it, it is
handed on whole. Reading it there rather than counting it as the application reads is what
makes the rule one: the framework turns any failure while reading a body into 400, and the
hot paths would each need their own count. A body with a `Content-Length` within the limit
is left to the server, which reads no more than that length.

FastAPI's own max_body_size answers with text/plain; the contract promises every error as
problem+json with a stable code.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from app.problems import problem

__all__ = ["read_within", "refuse_too_large", "replay"]


async def refuse_too_large(max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem(413, "request_too_large", f"request body is larger than {max_bytes} bytes")
    await response(scope, receive, send)


async def read_within(max_bytes: int, receive: Receive) -> Receive | None:
    """The whole body read, if it is at most `max_bytes`, as a receive that hands it out
    (then the server's); None when it is larger."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            messages.append(message)  # gone: the application sees it as it came
            break
        size += len(message.get("body", b""))
        if size > max_bytes:
            return None
        messages.append(message)
        if not message.get("more_body", False):
            body = b"".join(m.get("body", b"") for m in messages)
            messages = [{"type": "http.request", "body": body, "more_body": False}]
            break
    return replay(messages, receive)


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands out the messages already read, then the server's."""
    pending = messages[::-1]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
