"""The contract's objects of groups (DESIGN.md "Groups"), from the store's rows."""

from __future__ import annotations

from typing import Any

import orjson

from app.inbox.sync import format_time, message_data
from app.store.groups import EventRow, GroupRow, MemberRow, MessageRow

__all__ = ["event", "group", "member", "message"]


def group(row: GroupRow, me: MemberRow) -> dict[str, Any]:
    """`Group` as the caller `me` sees it."""
    return {
        "group_id": row.group_id,
        "title": row.title,
        "owner": row.owner,
        "member_count": row.member_count,
        "latest_seq": row.latest_seq,
        "joined_seq": me.joined_seq,
        "read_seq": me.read_seq,
        "large": row.large,
        "created_at": format_time(row.created_at),
    }


def member(row: MemberRow) -> dict[str, Any]:
    return {
        "user_id": row.user_id,
        "role": row.role,
        "joined_seq": row.joined_seq,
        "read_seq": row.read_seq,
    }


def message(row: MessageRow) -> dict[str, Any]:
    return message_data(
        row.id,
        row.sender,
        None,
        row.body,
        row.client_msg_id,
        row.created_at,
        row.recalled_at,
        row.group_id,
        row.seq,
    )


def event(row: EventRow) -> dict[str, Any]:
    """`GroupEvent`; `data` is stored as JSON already and passed through as is."""
    return {
        "seq": row.seq,
        "kind": row.kind,
        "created_at": format_time(row.created_at),
        "actor": row.actor,
        "data": orjson.Fragment(row.data),
    }
