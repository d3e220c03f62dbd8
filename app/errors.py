"""One error family with stable codes, rendered as RFC 9457 problem details."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

__all__ = [
    "AppError",
    "error_response",
    "install_error_handlers",
    "is_database_outage",
    "problem",
    "unexpected_error_response",
]

PROBLEM_JSON = "application/problem+json"

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


def is_database_outage(exc: BaseException) -> bool:
    """Whether exc is the database failing rather than the request (see _DATABASE_OUTAGES)."""
    return isinstance(exc, _DATABASE_OUTAGES)


def unexpected_error_response(exc: Exception) -> JSONResponse:
    """A failure no handler expected, still as problem details: 503 database_unavailable
    (with Retry-After) when the database failed, else 500 internal_error. The exception
    itself goes to the log, never to the client."""
    if isinstance(exc, _DATABASE_OUTAGES):
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


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return problem(422, "validation_error", f"{where}: {first['msg']}", errors=errors)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return problem(exc.status_code, code, str(exc.detail), headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for outage in _DATABASE_OUTAGES:
        app.add_exception_handler(outage, _database_outage)
    app.add_exception_handler(Exception, _unexpected)
