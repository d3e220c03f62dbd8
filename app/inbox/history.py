"""History for a new device: the conversation list and one conversation's messages, newest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.db.models import Conversation, Message
from app.inbox.sync import MESSAGE_COLUMNS, message_row_data

__all__ = ["list_conversations", "list_messages"]


async def list_conversations(
    db: Database, user_id: str, limit: int, before: int | None
) -> dict[str, Any]:
    """The user's conversations by newest message first; `before` is a last_message_id.

    A message belongs to one conversation, so a user's last_message_ids are distinct and
    make a stable keyset cursor.
    """
    # A conversation is one row per pair: the user's are those where the user is pair_lo
    # and those where the user is pair_hi (a note to oneself only in the first), each side
    # a bounded range of its own index, merged newest first.
    sides = []
    for me, other, cursor, also in (
        (Conversation.pair_lo, Conversation.pair_hi, Conversation.read_lo, None),
        (Conversation.pair_hi, Conversation.pair_lo, Conversation.read_hi, Conversation.pair_lo),
    ):
        side = (
            select(
                other.label("peer"),
                cursor.label("read_up_to_id"),
                Conversation.last_message_id,
            )
            .where(me == user_id)
            .order_by(Conversation.last_message_id.desc())
            .limit(limit + 1)
        )
        if also is not None:
            side = side.where(also != user_id)
        if before is not None:
            side = side.where(Conversation.last_message_id < before)
        sides.append(select(side.subquery()))
    page = union_all(*sides).subquery()
    stmt = (
        select(page.c.peer, page.c.read_up_to_id, *MESSAGE_COLUMNS)
        .join(Message, Message.id == page.c.last_message_id)
        .order_by(page.c.last_message_id.desc())
        .limit(limit + 1)
    )

    # One snapshot, so the unread counts belong to the same moment as the last messages;
    # on a replica when one serves.
    async def read(session: AsyncSession) -> tuple[list[Any], bool, dict[str, int]]:
        rows = list(await session.execute(stmt))
        page = rows[:limit]
        cursors = [(r.peer, r.read_up_to_id) for r in page]
        return page, len(rows) > limit, await _unread_counts(session, user_id, cursors)

    rows, more, unread = await db.read_lists(read)
    return {
        "conversations": [
            {
                "kind": "direct",
                "peer": row.peer,
                "last_message": message_row_data(row),
                "unread_count": unread.get(row.peer, 0),
            }
            for row in rows
        ],
        "next_before": rows[-1].id if more else None,
    }


async def _unread_counts(
    session: AsyncSession, user_id: str, cursors: list[tuple[str, int]]
) -> dict[str, int]:
    """Messages from each peer above the user's read cursor, recalled ones not counted."""
    arms = []
    for peer, read_up_to_id in cursors:
        if peer == user_id:
            continue  # notes to oneself are never unread
        lo, hi = sorted((user_id, peer))
        # One range of ix_messages_pair_lo_pair_hi_id per conversation.
        arms.append(
            and_(
                Message.pair_lo == lo,
                Message.pair_hi == hi,
                Message.id > read_up_to_id,
                Message.sender == peer,
            )
        )
    if not arms:
        return {}
    rows = await session.execute(
        select(Message.sender, func.count())
        .where(or_(*arms), Message.recalled_at.is_(None))
        .group_by(Message.sender)
    )
    return dict(rows.all())


async def list_messages(
    db: Database, user_id: str, peer: str, limit: int, before_id: int | None
) -> dict[str, Any]:
    """The conversation of `user_id` with `peer`, newest first, keyset-paged on message id.

    The caller is always one of the pair, so no one reads a conversation they are not in;
    a peer with whom nothing was exchanged (or who does not exist) gives an empty page.
    """
    lo, hi = sorted((user_id, peer))
    stmt = (
        select(*MESSAGE_COLUMNS)
        .where(Message.pair_lo == lo, Message.pair_hi == hi)
        .order_by(Message.id.desc())
        .limit(limit + 1)
    )
    if before_id is not None:
        stmt = stmt.where(Message.id < before_id)

    async def read(session: AsyncSession) -> list[Any]:
        return list(await session.execute(stmt))

    rows = await db.read_lists(read)  # on a replica when one serves
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "messages": [message_row_data(row) for row in rows],
        "next_before_id": rows[-1].id if more else None,
    }
