"""The errors of app.errors as the HTTP layer answers them: RFC 9457 problem details, their
schema for the OpenAPI document, and FastAPI's handlers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from app.edge.paths import documented_paths
from app.errors import DATABASE_OUTAGES, READ_ONLY_PRIMARY, AppError, is_database_outage

__all__ = [
    "PROBLEM_JSON",
    "Problem",
    "ValidationIssue",
    "error_response",
    "install_error_handlers",
    "problem",
    "unexpected_error_response",
]

PROBLEM_JSON = "application/problem+json"


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


# Named as it was when the error family and its answers were one module: operators filter
# the database-outage warnings by this logger (docs/operations.md).
log = logging.getLogger("app.errors")


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
    for outage in DATABASE_OUTAGES:
        app.add_exception_handler(outage, _database_outage)
    app.add_exception_handler(READ_ONLY_PRIMARY, _database_outage)
    app.add_exception_handler(Exception, _unexpected)
