"""The `Message` object of the HTTP contract, as stored in inbox payloads and answered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.db.models import Message

__all__ = ["MESSAGE_COLUMNS", "format_time", "message_data", "message_row_data"]


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, whatever time zone the database session reports in."""
    # Always six digits: the same text PostgreSQL's to_char(..., 'US') gives (the send
    # statement stamps its payloads so, app/store/postgresql/inbox.sql).
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def message_data(
    id: int,
    sender: str,
    recipient: str | None,
    body: str,
    client_msg_id: str | None,
    created_at: datetime,
    recalled_at: datetime | None,
    group_id: str | None = None,
    seq: int | None = None,
) -> dict[str, Any]:
    """The `Message` object of the HTTP contract; a recalled message shows an empty body.
    A direct message has a recipient (`to`); a group message has `group_id` and `seq`."""
    return {
        "id": id,
        "from": sender,
        "to": recipient,
        "body": "" if recalled_at is not None else body,
        "client_msg_id": client_msg_id,
        "created_at": format_time(created_at),
        "recalled_at": format_time(recalled_at) if recalled_at is not None else None,
        "group_id": group_id,
        "seq": seq,
    }


def message_row_data(row: Any) -> dict[str, Any]:
    return message_data(
        row.id,
        row.sender,
        row.recipient,
        row.body,
        row.client_msg_id,
        row.created_at,
        row.recalled_at,
    )


MESSAGE_COLUMNS = (
    Message.id,
    Message.sender,
    Message.recipient,
    Message.body,
    Message.client_msg_id,
    Message.created_at,
    Message.recalled_at,
)
