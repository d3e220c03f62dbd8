"""The front door: the cross-cutting concerns every answer crosses, in one layer.

The service answers some requests before the framework (plain sends, acks and syncs,
long-polls included, in app.edge.hotpaths). Concerns added as FastAPI middleware would
skip those answers, so they are applied here instead, outside both:
a concern added here holds for every answer by construction.

They are, outermost first: the request id, the latency metrics and gzip, all three applied
by the answer's own `send` (so that every other concern's log lines and answers carry the
id, and every answer is timed and compressed alike, CORS preflights and 413s included);
the last resort, which answers what escaped every inner layer; CORS, outside the size
limit so that a browser can read a 413; the request-size limit, next to the paths that
read bodies. They are one ASGI layer rather than a stack of five
because a plain ack is small work: each layer's call, header scan and `send` wrapper cost
W5 (acks per second) several per cent. The request head is scanned once, and a concern
does no work a request does not need (no gzip without `Accept-Encoding: gzip`, no CORS
unless origins are configured, the body size checked from the header when there is one).
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import sys
import time
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipResponder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.edge.limits import read_within, refuse_too_large
from app.edge.paths import DocumentedPath, documented_paths
from app.logs import request_id
from app.metrics import LATENCIES
from app.problems import unexpected_error_response

__all__ = ["MAX_REQUEST_ID", "FrontDoor"]

log = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# A supplied id is echoed into headers and log lines: keep characters that are safe in
# both, and a length that bounds what one client can make every line carry.
_UNSAFE = re.compile(rb"[^A-Za-z0-9._~:/@+=-]")
MAX_REQUEST_ID = 128

# Level 6, zlib's default: a 1000-entry page shrinks nearly as much as at 9, for a fraction
# of the CPU.
_GZIP_LEVEL = 6


# What the concerns need from a request's headers, read in one pass: the client's request
# id (sanitised, or empty), whether it accepts gzip, whether its announced length is over
# the limit, whether its body is chunked. A tuple: built once per request, it costs less
# than an object.
_Head = tuple[bytes, bool, bool, bool]


class FrontDoor:
    """Every answer's request id, latency, CORS, gzip and request-size limit, and the last
    resort for failures.

    **Request id.** `X-Request-Id` is the client's (sanitised) or a new one; it is on the
    answer and on every log line written while the request is served.

    **Metrics.** Every answer is timed by method, route template and status; an answer is
    counted before its last byte leaves, so a client that has its answer finds it counted.

    **Last resort.** No exception reaches the server, so no failure costs the client its
    keep-alive connection. uvicorn closes the connection when the application raises after
    it started a response, and Starlette's ServerErrorMiddleware does exactly that: it
    sends the 500 problem and then re-raises the exception for the server's log; the
    client's next request on that connection then met a reset. Here the exception is
    logged instead and the connection stays open. A failure before any answer (in
    app.edge.hotpaths, outside the framework's handlers) is answered
    here as the application would answer it. A response cut off half-way is left as it is: uvicorn
    closes that connection, the only way to tell the client it is incomplete.

    **gzip** for answers of at least `MSGSYNC_GZIP_MIN_BYTES` to clients that accept it is
    applied by the same `send` (_Answer) that adds the request id and times the answer.
    **CORS** (off unless `MSGSYNC_CORS_ORIGINS` is set) and the **request-size limit**
    (app.edge.limits) come after, in that order.
    """

    def __init__(self, app: ASGIApp, settings: Settings, known: frozenset[str]) -> None:
        self.app = app
        self._max_bytes = settings.max_request_bytes
        self._gzip_min = settings.gzip_min_bytes
        self._cors: ASGIApp | None = None
        self._cors_options: dict[str, Any] = {
            "allow_origins": settings.cors_origin_list,
            "allow_methods": ["GET", "POST", "DELETE"],
            "allow_headers": ["Authorization", "Content-Type", "X-Request-Id"],
            # Bearer tokens travel in a header, never in cookies: no credentials mode.
            "expose_headers": ["X-Request-Id", "Retry-After", "WWW-Authenticate"],
        }
        if settings.cors_origin_list:
            self._cors = CORSMiddleware(self._after_cors, **self._cors_options)
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
        # Each series's label values by (method, route or known path, status), so that a
        # request builds none.
        self._labels: dict[tuple[str, str, int], tuple[str, str, str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied, gzip, too_large, chunked = self._scan(scope["headers"])
        rid = supplied.decode("ascii") if supplied else f"{self._prefix}-{next(self._next):x}"
        answer = _Answer(self, scope, send, rid, gzip)
        token = request_id.set(rid)
        try:
            if self._cors is not None:
                await self._cors(scope, receive, answer)
            elif too_large or chunked:
                await self._limited(too_large, scope, receive, answer)
            else:
                await self.app(scope, receive, answer)
        except Exception as exc:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not answer.answered:
                failure: ASGIApp = unexpected_error_response(exc)
                if self._cors is not None:
                    # With the headers a browser needs to read it (a rare path: built here).
                    failure = CORSMiddleware(failure, **self._cors_options)
                await failure(scope, receive, answer)
        except BaseException:
            # Cancelled (the server is stopping): counted as what it had answered, if
            # anything, then passed on.
            if not answer.done:
                answer.finish(500 if answer.status == 499 else answer.status)
            raise
        finally:
            if not answer.done:
                answer.finish(answer.status)
        # Reset only after a normal return: when the application raised, uvicorn logs the
        # traceback after this returns, in this request's task, and that line should carry
        # the id too.
        request_id.reset(token)

    def _scan(self, headers: Any) -> _Head:
        request_id = b""
        gzip = too_large = chunked = False
        for name, value in headers:
            if name == b"x-request-id":
                request_id = _UNSAFE.sub(b"", value)[:MAX_REQUEST_ID]
            elif name == b"content-length":
                too_large = value.isdigit() and int(value) > self._max_bytes
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"accept-encoding":
                gzip = b"gzip" in value
        return request_id, gzip, too_large, chunked

    async def _limited(self, too_large: bool, scope: Scope, receive: Receive, send: Send) -> None:
        """The request-size limit (app.edge.limits), for a request that announces too much or no
        length at all."""
        if too_large:
            await refuse_too_large(self._max_bytes, scope, receive, send)
            return
        # No length announced: read the body here, up to the limit, before anything inside
        # sees it.
        within = await read_within(self._max_bytes, receive)
        if within is None:
            await refuse_too_large(self._max_bytes, scope, receive, send)
            return
        await self.app(scope, within, send)

    async def _after_cors(self, scope: Scope, receive: Receive, send: Send) -> None:
        # CORS passes on the scope alone: the head is read again (only when CORS is on).
        _, _, too_large, chunked = self._scan(scope["headers"])
        if too_large or chunked:
            await self._limited(too_large, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        where = scope["path"] if route is None else getattr(route, "path", "unmatched")
        key = (scope["method"], where, status)
        labels = self._labels.get(key)
        if labels is None:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            labels = (method, self._template(scope), str(status))
            # Kept for routes and the known paths only: a key per raw path would let
            # clients grow this without bound. (The parser admits only HTTP's methods.)
            if route is not None or where in self._known:
                self._labels[key] = labels
        LATENCIES.observe(labels, seconds)

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


class _Answer:
    """One request's `send` as the application sees it: the request id on the answer, gzip
    when the client accepts it and the answer is worth it, and the answer timed.

    One object with slots per request rather than closures: each closure's cells are
    objects that the garbage collector tracks while the request is in flight, and with
    hundreds of requests in flight they set off collections (an in-process loop of plain
    acks, 100 in flight, ran 138 young collections per 2,500 acks with the closures, 93
    with this object).
    """

    __slots__ = (
        "answered",
        "done",
        "door",
        "gzip",
        "responder",
        "rid",
        "scope",
        "send",
        "started",
        "status",
    )

    def __init__(self, door: FrontDoor, scope: Scope, send: Send, rid: str, gzip: bool) -> None:
        self.door = door
        self.scope = scope
        self.send = send
        self.rid = rid
        self.gzip = gzip
        self.responder: GZipResponder | None = None
        self.status = 499  # nginx's convention: the client went away before it was answered
        self.answered = self.done = False
        self.started = time.perf_counter()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.answered = True
            # A new list: a response object may reuse its own between answers.
            message["headers"] = [
                *message.get("headers", ()),
                (b"x-request-id", self.rid.encode("ascii")),
            ]
            # Starlette's gzip responder, only for an answer that may be worth it: one that
            # announces a length below the threshold (most sends and acks) passes untouched.
            if self.gzip and _announced_length(message) >= self.door._gzip_min:
                self.responder = GZipResponder(
                    self.door.app, self.door._gzip_min, compresslevel=_GZIP_LEVEL
                )
                self.responder.send = self.send
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            # Counted before its last byte leaves: a client that has its answer finds it
            # counted.
            self.finish(self.status)
        if self.responder is None:
            await self.send(message)
        else:
            await self.responder.send_with_compression(message)

    def finish(self, status: int) -> None:
        self.done = True
        self.door._observe(self.scope, status, time.perf_counter() - self.started)


def _templates(app: Any) -> list[DocumentedPath]:
    try:
        return documented_paths(app)
    except Exception:  # metrics must never fail a request: label such answers "unmatched"
        return []


def _announced_length(start: Message) -> int:
    """The answer's Content-Length, or a length past any threshold when it has none."""
    for name, value in start.get("headers", ()):
        if name == b"content-length":
            return int(value)
    return sys.maxsize
