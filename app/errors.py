"""One error family with stable codes: what the service can refuse, and why.

Free of the HTTP framework, so that the domain (the stores, the inbox, accounts) and the
commands that use it without serving (`msgsync retention`) load none of it: app.problems
renders these errors as RFC 9457 problem details."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy.exc

__all__ = [
    "CODES",
    "DATABASE_OUTAGES",
    "READ_ONLY_PRIMARY",
    "AppError",
    "ErrorCode",
    "is_database_outage",
]


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


# Failures of the database rather than of the request: the connection dropped (a restart, a
# failover), the pool had no connection in time, SQLite stayed locked. Retrying helps.
DATABASE_OUTAGES = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


# A primary being demoted by a failover turns read-only before it stops (pg_auto_failover
# drains it so): a write on a connection made before then is refused, nothing is written,
# and the retry reaches the new primary. SQLAlchemy wraps it as an InternalError.
READ_ONLY_PRIMARY = psycopg.errors.ReadOnlySqlTransaction


def is_database_outage(exc: BaseException) -> bool:
    """Whether exc is the database failing rather than the request (see DATABASE_OUTAGES)."""
    if isinstance(exc, sqlalchemy.exc.InternalError):
        return isinstance(exc.orig, READ_ONLY_PRIMARY)
    return isinstance(exc, (*DATABASE_OUTAGES, READ_ONLY_PRIMARY))
