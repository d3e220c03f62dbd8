"""The ack's lean path: a well-formed ack from a known device is answered here.

An ack is the smallest and most frequent request a client makes: a version, answered with
the cursor once its batch commits. Through the framework each one paid for routing, the
dependency graph, body validation and response validation, several times the cost of the
write it waits for (the batch is one statement for hundreds of acks). This layer answers
the common case directly: `POST /ack` with a cached bearer token and a JSON body that is
exactly `{"version": <integer in range>}`. Everything else (a token not yet cached, a
malformed or oversized body, a string for a number) goes through the application
unchanged, which validates, authenticates and answers errors; so the route there stays the
one definition of the contract, and this layer only ever agrees with it.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.acks import AckBatcher
from app.auth import TokenCache, token_digest
from app.errors import AppError, error_response
from app.schemas import MAX_ID

__all__ = ["AckPath"]

_JSON = b"application/json"


class AckPath:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/ack" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization = content_type = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
        state = scope["app"].state
        tokens: TokenCache = state.tokens
        digest = token_digest(authorization.decode("latin-1"))
        device = tokens.get(digest) if digest is not None else None
        if device is None or content_type.partition(b";")[0].strip().lower() != _JSON:
            await self.app(scope, receive, send)
            return
        body, complete = await self._read(receive)
        version = _version(body) if complete else None
        if version is None:
            await self.app(scope, _replay(body, complete, receive), send)
            return
        acks: AckBatcher = state.acks
        try:
            cursor = await acks.ack(device.user_id, device.device_id, version)
        except AppError as exc:
            await error_response(exc)(scope, receive, send)
            return
        content = orjson.dumps({"device_id": device.device_id, "acked_version": cursor})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", _JSON),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        """The body, and whether it is all there: reading stops past the size limit, and the
        application then rejects the request as it rejects any other too large."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), False  # disconnected: the app sees it too
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True
            if size > self.max_bytes:
                return b"".join(chunks), False


def _version(body: bytes) -> int | None:
    """The version of a body that is exactly {"version": n} with n in range, else None."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(parsed) is not dict or len(parsed) != 1:
        return None
    version = parsed.get("version")
    # type() and not isinstance(): True is an int to Python but not a version.
    if type(version) is not int or not 0 <= version <= MAX_ID:
        return None
    return version


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A receive that hands the application the body already read, then the rest."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": not complete}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
