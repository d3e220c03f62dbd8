"""The two hot writes, send and ack, answered before the framework when they are plain.

A send and an ack are the requests a messenger makes most, and the smallest. Through the
framework each paid for routing, the dependency graph and response validation: for an ack
several times the cost of its share of the batch write, for a send about as much as its
database statement. This layer answers them directly when the token is cached, the body is
JSON and it validates against the very model the route declares (SendIn, AckIn), then runs
the very function the route runs (app.inbox.send.deliver, app.inbox.acks.acknowledge).
Anything else (a token not yet cached, a body that does not validate, another content type)
goes through the application unchanged, which authenticates, validates and answers errors;
so the routes stay the one definition of the contract, and this layer only ever agrees with
them.

The cross-cutting concerns (request id, metrics, CORS, gzip, the request-size limit) are
not this layer's: they wrap it, in app.edge.frontdoor, so its answers get them as any other
does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.accounts.auth import DeviceContext, TokenCache, token_digest
from app.edge.limits import replay
from app.errors import AppError, error_response, unexpected_error_response
from app.inbox.acks import acknowledge
from app.inbox.send import deliver
from app.schemas import AckIn, SendIn

__all__ = ["PATHS", "HotPaths"]

log = logging.getLogger(__name__)

_JSON = b"application/json"

Handler = Callable[[State, DeviceContext, Any], Awaitable[tuple[int, bytes]]]

_ROUTES: dict[tuple[str, str], tuple[type[BaseModel], Handler]] = {
    ("POST", "/messages"): (
        SendIn,
        lambda state, device, body: deliver(
            state.db, state.notifier, state.settings, state.send_rate, device, body
        ),
    ),
    ("POST", "/ack"): (
        AckIn,
        lambda state, device, body: acknowledge(state.acks, device, body),
    ),
}

# The paths this layer may answer (for the front door's metrics, which see no route here).
PATHS = frozenset(path for _, path in _ROUTES)


class HotPaths:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _ROUTES.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        authorization = content_type = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
        state: State = scope["app"].state
        tokens: TokenCache = state.tokens
        digest = token_digest(authorization.decode("latin-1"))
        device = tokens.get(digest) if digest is not None else None
        if device is None or content_type.partition(b";")[0].strip().lower() != _JSON:
            await self.app(scope, receive, send)
            return
        raw, complete = await self._read(receive)
        model, handler = route
        try:
            if not complete:
                raise ValueError("incomplete body")
            body = model.model_validate_json(raw)
        except (ValueError, ValidationError):
            await self.app(scope, replay([_request(raw, complete)], receive), send)
            return
        try:
            status, content = await handler(state, device, body)
        except AppError as exc:
            await error_response(exc)(scope, receive, send)
            return
        except Exception as exc:
            # Answered as the application answers it, and logged as it logs it.
            log.exception("%s %s failed", scope["method"], scope["path"])
            await unexpected_error_response(exc)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", _JSON),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        """The body, and whether it is all there. The front door has refused any body over
        the size limit already (app.edge.limits), so this holds at most that much."""
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), False  # disconnected: the app sees it too
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks), True


def _request(body: bytes, complete: bool) -> Message:
    """The body already read, as the server handed it out."""
    return {"type": "http.request", "body": body, "more_body": not complete}
