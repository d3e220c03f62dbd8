"""The front door: the one ordered stack of cross-cutting concerns every answer crosses.

The service answers some requests before the framework (plain sends and acks in
app.hotpaths, woken long-polls in app.longpoll). Concerns added as FastAPI middleware would
skip those answers, so they are applied here instead, outside all three: a concern added to
`front_door` holds for every answer by construction. Each layer is plain ASGI and does no
work a request does not need (no gzip wrapper without `Accept-Encoding: gzip`, no CORS layer
unless origins are configured, the body size checked from the header when there is one).
"""

from __future__ import annotations

import itertools
import re
import secrets
import sys
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import Histogram
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware, GZipResponder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.metrics import LATENCY
from app.config import Settings
from app.limits import RequestSizeLimit
from app.logs import request_id
from app.paths import DocumentedPath, documented_paths

__all__ = ["Compression", "RequestIdAndMetrics", "front_door", "wrap"]


def front_door(settings: Settings, known_paths: frozenset[str]) -> list[Middleware]:
    """The concerns, outermost first. The request id and metrics come first so that every
    other layer's log lines and answers carry the id, and every answer is timed, CORS
    preflights and 413s included; CORS outside the size limit, so that a
    browser can read a 413; the size limit last, next to the paths that read bodies."""
    stack = [Middleware(RequestIdAndMetrics, known=known_paths)]
    if settings.cors_origin_list:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origin_list,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
                # Bearer tokens travel in a header, never in cookies: no credentials mode.
                expose_headers=["X-Request-Id", "Retry-After", "WWW-Authenticate"],
            )
        )
    # Level 6, zlib's default: a 1000-entry page shrinks nearly as much as at 9, for a
    # fraction of the CPU.
    stack.append(Middleware(Compression, minimum_size=settings.gzip_min_bytes, compresslevel=6))
    stack.append(Middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes))
    return stack


def wrap(app: ASGIApp, stack: Sequence[Middleware]) -> ASGIApp:
    for cls, args, kwargs in reversed(stack):
        app = cls(app, *args, **kwargs)
    return app


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# A supplied id is echoed into headers and log lines: keep characters that are safe in
# both, and a length that bounds what one client can make every line carry.
_UNSAFE = re.compile(rb"[^A-Za-z0-9._~:/@+=-]")
MAX_REQUEST_ID = 128


class RequestIdAndMetrics:
    """Gives every request its `X-Request-Id` (the client's, sanitised, or a new one) on the
    answer and in the log, and times every answer by method, route template and status.

    Two concerns in one layer because both must see every answer's start and end: one
    wrapper around `send` instead of two halves what they add to a plain send or ack.
    """

    def __init__(self, app: ASGIApp, known: frozenset[str]) -> None:
        self.app = app
        # A random prefix per process and a counter: unique across workers and restarts,
        # and far cheaper per request than a UUID from the system's random source.
        self._prefix = secrets.token_hex(6)
        self._next = itertools.count(1)
        # The paths answered before the framework routes them (hot paths, long-polls): each
        # is its own template, found at once.
        self._known = known
        # Every other template, from the OpenAPI paths, for the rare answer given before
        # routing (a 413, a CORS preflight): filled at the first such answer.
        self._templates: list[DocumentedPath] | None = None
        # The labelled series, so that a request costs one observation and no label look-up.
        self._series: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = _UNSAFE.sub(b"", value)[:MAX_REQUEST_ID].decode("ascii")
                break
        rid = rid or f"{self._prefix}-{next(self._next):x}"
        header = (b"x-request-id", rid.encode("ascii"))
        status = 499  # nginx's convention: the client went away before it was answered
        done = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
                # A new list: a response object may reuse its own between answers.
                message["headers"] = [*message.get("headers", ()), header]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Counted before the last byte leaves: a client that has its answer finds
                # it counted.
                done = True
                self._observe(scope, status, time.perf_counter() - started)
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            if not done:
                done = True
                self._observe(
                    scope, 500 if status == 499 else status, time.perf_counter() - started
                )
            raise
        finally:
            if not done:
                self._observe(scope, status, time.perf_counter() - started)
        # Reset only after a normal return: when the application raised, uvicorn logs the
        # traceback after this returns, in this request's task, and that line should carry
        # the id too.
        request_id.reset(token)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "other"
        key = (method, self._template(scope), status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = LATENCY.labels(key[0], key[1], str(status))
        series.observe(seconds)

    def _template(self, scope: Scope) -> str:
        """The route's template, never the raw path: one series per route, however many
        peers or ids clients name."""
        route = scope.get("route")
        if route is not None:
            return str(getattr(route, "path", "unmatched"))
        path: str = scope["path"]
        if path in self._known:
            return path
        if self._templates is None:
            self._templates = _templates(scope["app"])
        for documented in self._templates:
            if documented.pattern.fullmatch(path):
                return documented.template
        return "unmatched"


def _templates(app: Any) -> list[DocumentedPath]:
    try:
        return documented_paths(app)
    except Exception:  # metrics must never fail a request: label such answers "unmatched"
        return []


class Compression(GZipMiddleware):
    """Starlette's gzip, entered only where it can matter. Clients that do not accept gzip
    skip it altogether; for those that do (most real clients), an answer that announces a
    length below the threshold (most sends and acks) is passed on untouched, without
    Starlette's per-request responder; any other answer goes through that responder."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"accept-encoding":
                    if b"gzip" in value:
                        await self.app(scope, receive, self._compressing(send))
                        return
                    break
        await self.app(scope, receive, send)

    def _compressing(self, send: Send) -> Send:
        responder: GZipResponder | None = None

        async def compressing(message: Message) -> None:
            nonlocal responder
            if (
                message["type"] == "http.response.start"
                and _announced_length(message) >= self.minimum_size
            ):
                responder = GZipResponder(
                    self.app,
                    self.minimum_size,
                    compresslevel=self.compresslevel,
                    thread_minimum_size=self.thread_minimum_size,
                    exclude_content_types=self.exclude_content_types,
                )
                responder.send = send
            if responder is None:
                await send(message)
            else:
                await responder.send_with_compression(message)

        return compressing


def _announced_length(start: Message) -> int:
    """The answer's Content-Length, or a length past any threshold when it has none."""
    for name, value in start.get("headers", ()):
        if name == b"content-length":
            return int(value)
    return sys.maxsize
