"""One error family with stable codes, rendered as RFC 9457 problem details."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from app.edge.paths import documented_paths

__all__ = [
    "CODES",
    "PROBLEM_JSON",
    "AppError",
    "ErrorCode",
    "Problem",
    "ValidationIssue",
    "error_response",
    "install_error_handlers",
    "is_database_outage",
    "problem",
    "unexpected_error_response",
]

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class ErrorCode:
    status: int  # 0: whatever status the framework answered
    meaning: str
    retry_after: bool = False  # the answer carries Retry-After


# Every stable `code` the service answers, with its status and meaning. Routes document theirs
# with app.openapi.problem_responses(code, ...), which refuses a code missing here, and
# tests/test_docs_agree.py checks this table against the codes raised in app/, the OpenAPI
# document and docs/protocol.md: a new code is added here, in a route's responses and there.
CODES: dict[str, ErrorCode] = {
    "bad_request": ErrorCode(400, "The request body could not be read (not UTF-8 JSON)."),
    "unauthorized": ErrorCode(401, "The bearer token is missing, unknown or revoked."),
    "bad_credentials": ErrorCode(401, "Unknown user or wrong password."),
    "forbidden": ErrorCode(403, "The framework refused the request."),
    "not_sender": ErrorCode(403, "Only the sender can recall a message."),
    "not_group_admin": ErrorCode(
        403, "Only the group's owner (or, where allowed, an admin) can do this."
    ),
    "not_found": ErrorCode(404, "No such path."),
    "recipient_not_found": ErrorCode(404, "The recipient does not exist."),
    "user_not_found": ErrorCode(404, "No user has this id."),
    "message_not_found": ErrorCode(
        404, "No such message, or not one of the caller's conversation."
    ),
    "conversation_not_found": ErrorCode(404, "The two users have no conversation."),
    "device_not_found": ErrorCode(404, "The caller has no device with this id."),
    "group_not_found": ErrorCode(404, "No such group, or the caller is not a member."),
    "pusher_not_found": ErrorCode(404, "None of the user's devices has this pusher."),
    "method_not_allowed": ErrorCode(405, "The path does not take that method (see `Allow`)."),
    "user_exists": ErrorCode(409, "The user id is taken."),
    "recall_window_passed": ErrorCode(409, "Too late to recall the message."),
    "group_too_large": ErrorCode(409, "The group would have more members than allowed."),
    "client_msg_id_taken": ErrorCode(
        409, "The sender used this client_msg_id for a send of the other kind (direct or group)."
    ),
    "too_many_pushers": ErrorCode(
        409, "The device, or the user's devices together, have as many pushers as allowed."
    ),
    "since_ahead": ErrorCode(
        409, "`since` is ahead of the user's latest version (given as `latest_version`)."
    ),
    "history_rewritten": ErrorCode(
        409,
        "The entry at `since` is not the one `since_id` names: the server's history was "
        "rewritten (a restore, a failover); sync again from 0 (`latest_version` given).",
    ),
    "ack_ahead": ErrorCode(
        409, "The acked version is ahead of the user's latest (given as `latest_version`)."
    ),
    "body_too_large": ErrorCode(413, "The message body is over the configured byte limit."),
    "request_too_large": ErrorCode(413, "The request body is over the configured byte limit."),
    "validation_error": ErrorCode(
        422, "The request does not match the schema; `errors` lists where and why."
    ),
    "limit_out_of_range": ErrorCode(422, "`limit` is above the server's maximum."),
    "gateway_not_allowed": ErrorCode(
        422,
        "The gateway URL is malformed or outside the allowed gateways (push may be off).",
    ),
    "pusher_data_too_large": ErrorCode(422, "The pusher's `data` is over 4 KiB of JSON."),
    "too_many_attempts": ErrorCode(
        429,
        "Too many login or registration attempts for this account or address, or wrong "
        "passwords re-entered by this device; retry after `Retry-After` seconds.",
        retry_after=True,
    ),
    "too_many_requests": ErrorCode(
        429,
        "The user sends faster than the server's send rate; retry after `Retry-After` seconds.",
        retry_after=True,
    ),
    "request_head_too_large": ErrorCode(
        431, "The request head is over the configured bytes or header fields (the server closes)."
    ),
    "internal_error": ErrorCode(500, "A bug; the traceback is in the server's log."),
    "database_unavailable": ErrorCode(
        503, "The database did not answer; retry after `Retry-After` seconds.", retry_after=True
    ),
    "shutting_down": ErrorCode(503, "The server is shutting down; retry (another process)."),
    "server_busy": ErrorCode(
        503,
        "Too many password checks are queued in this process; retry after `Retry-After`.",
        retry_after=True,
    ),
    "http_error": ErrorCode(0, "Any other refusal by the HTTP framework."),
}


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class ValidationIssue(BaseModel):
    """One reason why the request did not validate."""

    loc: list[str | int] = Field(
        description="Where: `body`, `query`, `path` or `header`, then the field (and index).",
        examples=[["body", "version"]],
    )
    msg: str = Field(description="Why, for a human.", examples=["Input should be a valid integer"])
    type: str = Field(
        description="Why, for a program (pydantic's error type).", examples=["int_type"]
    )


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (`application/problem+json`). `code` is the
    stable part to act on; more members may appear (RFC 9457 extension members)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://msgsync.dev/problems/since-ahead",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "since=9 is ahead of the latest version 1",
                    "code": "since_ahead",
                    "latest_version": 1,
                }
            ]
        },
    )

    type: str = Field(
        description="A URI naming the problem type, derived from `code`.",
        examples=["https://msgsync.dev/problems/since-ahead"],
    )
    title: str = Field(description="The HTTP status phrase.", examples=["Conflict"])
    status: int = Field(ge=400, le=599, description="The HTTP status.", examples=[409])
    detail: str = Field(
        description="What happened, for a human; not stable.",
        examples=["since=9 is ahead of the latest version 1"],
    )
    code: str = Field(
        description="The stable, machine-readable reason (snake_case); see docs/protocol.md.",
        examples=["since_ahead"],
    )
    # Members present for some codes only: absent otherwise, never null.
    errors: list[ValidationIssue] | SkipJsonSchema[None] = Field(
        default=None,
        description="For `validation_error`: every reason, in order.",
        json_schema_extra=_no_default,
    )
    latest_version: Annotated[int, Field(ge=0)] | SkipJsonSchema[None] = Field(
        default=None,
        description="For `since_ahead`, `history_rewritten` and `ack_ahead`: the user's "
        "latest version.",
        json_schema_extra=_no_default,
    )


log = logging.getLogger(__name__)


class AppError(Exception):
    """A failure the client can act on. `code` is the stable, machine-readable part."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})  # e.g. Retry-After on a 429 or a 503
        self.extra = extra


def problem(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"https://msgsync.dev/problems/{code.replace('_', '-')}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(
        jsonable_encoder(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


def error_response(exc: AppError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    return problem(
        exc.status, exc.code, exc.detail, headers={**headers, **exc.headers}, **exc.extra
    )


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc)


# Failures of the database rather than of the request: the connection dropped (a restart, a
# failover), the pool had no connection in time, SQLite stayed locked. Retrying helps.
_DATABASE_OUTAGES = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


# A primary being demoted by a failover turns read-only before it stops (pg_auto_failover
# drains it so): a write on a connection made before then is refused, nothing is written,
# and the retry reaches the new primary. SQLAlchemy wraps it as an InternalError.
_READ_ONLY_PRIMARY = psycopg.errors.ReadOnlySqlTransaction


def is_database_outage(exc: BaseException) -> bool:
    """Whether exc is the database failing rather than the request (see _DATABASE_OUTAGES)."""
    if isinstance(exc, sqlalchemy.exc.InternalError):
        return isinstance(exc.orig, _READ_ONLY_PRIMARY)
    return isinstance(exc, (*_DATABASE_OUTAGES, _READ_ONLY_PRIMARY))


def unexpected_error_response(exc: Exception) -> JSONResponse:
    """A failure no handler expected, still as problem details: 503 database_unavailable
    (with Retry-After) when the database failed, else 500 internal_error. The exception
    itself goes to the log, never to the client."""
    if is_database_outage(exc):
        return problem(
            503,
            "database_unavailable",
            "the database did not answer; retry shortly",
            headers={"Retry-After": "1"},
        )
    return problem(500, "internal_error", "the server failed unexpectedly; it has been logged")


async def _database_outage(request: Request, exc: Exception) -> JSONResponse:
    # Handled like any expected error (so the connection stays open for the client's
    # retry), but logged: an operator wants to know.
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return unexpected_error_response(exc)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Starlette's ServerErrorMiddleware sends this, then re-raises for the server's log.
    return unexpected_error_response(exc)


def _printable(part: object) -> str | int:
    """A location part as the answer can carry it: a key may hold a lone surrogate, which no
    UTF-8 encoder takes, so it is written as its escape (\\ud800) instead."""
    if isinstance(part, int):
        return part
    return str(part).encode("utf-8", "backslashreplace").decode("utf-8")


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The input itself is never echoed: it may be large, secret (a password) or unencodable.
    errors = [
        {
            "loc": [_printable(p) for p in e.get("loc", ())],
            "msg": _printable(e.get("msg", "")),
            "type": e.get("type", ""),
        }
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return problem(422, "validation_error", f"{where}: {first['msg']}", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette's Allow names the methods of the first route of the path only; a path
        # served by several routes (GET and POST /pushers) answers those of all of them.
        allowed = _documented_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(sorted(allowed))
    return problem(exc.status_code, code, str(exc.detail), headers=headers)


def _documented_methods(request: Request) -> set[str]:
    """The methods the OpenAPI document gives the request's path (HEAD with GET, as
    Starlette serves it); empty for a path the document leaves out."""
    methods: set[str] = set()
    for path in documented_paths(request.app):
        if path.pattern.fullmatch(request.url.path):
            methods |= path.methods
    if "GET" in methods:
        methods.add("HEAD")
    return methods


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for outage in _DATABASE_OUTAGES:
        app.add_exception_handler(outage, _database_outage)
    app.add_exception_handler(_READ_ONLY_PRIMARY, _database_outage)
    app.add_exception_handler(Exception, _unexpected)
