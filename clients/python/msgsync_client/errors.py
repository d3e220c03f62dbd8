"""Errors the SDK raises: one family, carrying the server's stable problem `code`."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "HistoryChanged",
    "HistoryRewritten",
    "MsgsyncError",
    "NotLoggedIn",
    "SinceAhead",
    "Unauthorized",
    "Unavailable",
]


class MsgsyncError(Exception):
    """Base of every SDK error; `code` is stable snake_case."""

    code = "msgsync_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ApiError(MsgsyncError):
    """The server answered with a problem document (RFC 9457) the SDK does not retry."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}", code)
        self.status = status
        self.detail = detail
        self.body = body


class Unauthorized(ApiError):
    """401: the token is gone (logged out, device removed). The session is over."""


class HistoryChanged(ApiError):
    """409: the server no longer has the history this device has seen (a restored backup,
    a promoted replica that missed commits). The client forgets its stream and syncs again
    from 0."""

    @property
    def latest_version(self) -> int:
        return int(self.body.get("latest_version", 0))


class SinceAhead(HistoryChanged):
    """409 since_ahead: the server's stream is behind the local cursor."""


class HistoryRewritten(HistoryChanged):
    """409 history_rewritten: the entry at the local cursor is another one on the server now:
    versions this device has seen were handed to other changes."""


class Unavailable(MsgsyncError):
    """The server stayed unreachable or answering 5xx for every allowed attempt."""

    code = "unavailable"


class NotLoggedIn(MsgsyncError):
    code = "not_logged_in"

    def __init__(self) -> None:
        super().__init__("no session in this store: log in first")
