"""The hot requests, sends, acks and syncs, answered before the framework when they are plain.

A send and an ack are the requests a messenger makes most, and the smallest. Through the
framework each paid for routing, the dependency graph and response validation: for an ack
several times the cost of its share of the batch write, for a send about as much as its
database statement. This layer answers them directly when they carry a bearer token, the
body is JSON and it validates against the very model the route declares (SendIn,
GroupSendIn, AckIn), and for a group send when the group id in the path is one the route
accepts; it authenticates the token as the route's dependency does (app.accounts.auth:
from the cache, or read and cached) and runs the very function the route runs
(app.inbox.send.deliver, app.groups.send.deliver, app.inbox.acks.acknowledge). A group send
is as frequent as a direct one, and in a small group its share of framework work per
delivery is the largest of all: ten members amortise one request's routing over ten
deliveries only. Tokens not yet cached are authenticated here too: every device's first
request to a process (and its first after the cache's minute) would otherwise pay for the
framework, and with several processes and many devices that was most of a short burst's
sends.
A sync is answered alike when it carries a bearer token (cached or not: it is
authenticated with the read) and its query validates against the route's SyncQuery: it
reads, and waits when it is a long-poll, through the route's LongPolls.wait_for_page
(app.inbox.wait), so that a waiting device holds none of the framework's per-request state.
Anything else (no bearer token, a body or query that does not validate, another content
type) goes through the application unchanged,
which authenticates, validates and answers errors; so the routes stay the one definition of
the contract, and this layer only ever agrees with them.

The cross-cutting concerns (request id, metrics, CORS, gzip, the request-size limit) are
not this layer's: they wrap it, in app.edge.frontdoor, so its answers get them as any other
does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.accounts.auth import DeviceContext, authenticate, token_digest
from app.edge.limits import replay
from app.errors import AppError
from app.groups import send as group_send
from app.inbox.acks import acknowledge
from app.inbox.send import deliver
from app.inbox.wait import LongPolls
from app.problems import error_response, unexpected_error_response
from app.schemas import GROUP_ID_MAX_LENGTH, NO_NUL, AckIn, GroupSendIn, SendIn, SyncQuery

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

SYNC = ("GET", "/sync")

# The paths this layer may answer (for the front door's metrics, which see no route here).
PATHS = frozenset(path for _, path in (*_ROUTES, SYNC))

# POST /groups/{group_id}/messages, matched as the router matches it (one path segment, not
# empty), and its group id checked as the route's path parameter is (app.api.groups.GroupId).
_GROUP_PREFIX, _GROUP_SUFFIX = "/groups/", "/messages"
_NUL = "\x00"
assert NO_NUL == r"^[^\x00]*$", "the group id check below is the route's pattern"


class _Template:
    """What the front door reads of a matched route (its `path`, the template) to label an
    answer's metrics: a group send answered here is counted under the route's template, as
    the framework counts it, and its labels are cached per template, not per group."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


GROUP_SEND = _Template("/groups/{group_id}/messages")


def _group_of_send(method: str, path: str) -> str | None:
    """The group id of a group send the route would accept, else None (the application
    answers it: a 404 for another path, a 422 for a group id the route refuses)."""
    if method != "POST" or not path.startswith(_GROUP_PREFIX) or not path.endswith(_GROUP_SUFFIX):
        return None
    group_id = path[len(_GROUP_PREFIX) : -len(_GROUP_SUFFIX)]
    if not group_id or "/" in group_id or len(group_id) > GROUP_ID_MAX_LENGTH or _NUL in group_id:
        return None
    return group_id


def _group_route(group_id: str) -> tuple[type[BaseModel], Handler]:
    return (
        GroupSendIn,
        lambda state, device, body: group_send.deliver(
            state.store, state.notifier, state.settings, state.send_rate, device, group_id, body
        ),
    )


class HotPaths:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = (scope["method"], scope["path"])
        route = _ROUTES.get(key)
        template: _Template | None = None
        if route is None and key != SYNC:
            group_id = _group_of_send(*key)
            if group_id is None:
                await self.app(scope, receive, send)
                return
            route, template = _group_route(group_id), GROUP_SEND
        authorization = content_type = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
        state: State = scope["app"].state
        digest = token_digest(authorization.decode("latin-1"))
        if route is None:
            if digest is None:
                await self.app(scope, receive, send)  # answered by the application: 401
            else:
                await self._sync(scope, receive, send, state.longpolls, digest)
            return
        if digest is None or content_type.partition(b";")[0].strip().lower() != _JSON:
            await self.app(scope, receive, send)
            return
        raw, complete = await self._read(receive)
        model, handler = route
        try:
            if not complete:
                raise ValueError("incomplete body")
            body = model.model_validate_json(raw)
        except (ValueError, ValidationError):
            # The application answers, with its own precedence (a bad token's 401 first).
            await self.app(scope, replay([_request(raw, complete)], receive), send)
            return
        if template is not None:
            scope["route"] = template
        try:
            # Cached, or read and cached, as the route's dependency does (a device's first
            # request to this process, or its first after the cache's minute): 401 alike.
            device = await authenticate(state.db, state.tokens, state.settings, digest)
            status, content = await handler(state, device, body)
        except Exception as exc:
            await _failed(exc, scope, receive, send)
            return
        await _answer(send, status, content)

    async def _sync(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        longpolls: LongPolls,
        digest: bytes,
    ) -> None:
        """A GET /sync with a bearer token, read (and waited for) as the route would. Its
        token is authenticated there, cached or not: a device whose cached token expired
        (a minute) waits here too, not in the framework."""
        query_string = scope["query_string"].decode("latin-1")
        try:
            # Parsed as the framework parses a query (the last of repeated names wins).
            query = SyncQuery.model_validate(dict(parse_qsl(query_string, keep_blank_values=True)))
        except ValidationError:
            await self.app(scope, receive, send)  # answered by the application: 422
            return
        try:
            page = await longpolls.wait_for_page(digest, query, receive)
        except Exception as exc:
            await _failed(exc, scope, receive, send)
            return
        if page is not None:  # None: the client hung up while waiting
            await _answer(send, 200, page)

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


async def _answer(send: Send, status: int, content: bytes) -> None:
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


async def _failed(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """A failure answered as the application answers it, and logged as it logs it."""
    if isinstance(exc, AppError):
        await error_response(exc)(scope, receive, send)
        return
    log.exception("%s %s failed", scope["method"], scope["path"])
    await unexpected_error_response(exc)(scope, receive, send)
