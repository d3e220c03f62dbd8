"""Recall and read receipts: operation entries written to both parties' offline stores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.db.models import Conversation, InboxEntry, Message, User
from app.errors import AppError
from app.inbox.sync import MESSAGE_COLUMNS, bump_versions, message_data, message_row_data

__all__ = ["ReadResult", "RecallResult", "mark_read", "recall_message"]


@dataclass(frozen=True, slots=True)
class RecallResult:
    message: dict[str, Any]
    parties: tuple[str, str]
    changed: bool  # False when the message was already recalled: nothing new to wake for


@dataclass(frozen=True, slots=True)
class ReadResult:
    read_up_to_id: int
    version: int  # the reader's version after the change, or the latest one for a no-op
    changed: bool


async def recall_message(
    db: Database, user_id: str, message_id: int, window_seconds: int
) -> RecallResult:
    """One transaction: both versions, the cleared index row, rewritten and new entries."""
    async with db.statement() as conn:
        row = (
            await conn.execute(
                select(*MESSAGE_COLUMNS, Message.sender_version, Message.recipient_version).where(
                    Message.id == message_id
                )
            )
        ).first()
    # Sender, recipient and created_at never change, so judging them before the lock is safe.
    if row is None or user_id not in (row.sender, row.recipient):
        # The same answer for "no such message" and "not yours": never reveal that it exists.
        raise AppError(404, "message_not_found", f"no message {message_id}")
    if row.sender != user_id:
        raise AppError(403, "not_sender", "only the sender can recall a message")
    parties: tuple[str, str] = (row.sender, row.recipient)
    if row.recalled_at is not None:
        # recalled_at is set once and never cleared: a retry is answered without any lock.
        return RecallResult(message_row_data(row), parties, changed=False)

    async with db.session() as session, session.begin() as transaction:
        # Versions first, through the same user-id-ordered row locks as send: a recall then
        # queues behind the sends of this pair instead of crossing them, and its versions
        # commit in order with theirs.
        versions = await bump_versions(db, session, parties)
        # Every recall of this message holds the sender's lock, so what we read now is final:
        # a concurrent recall that committed first makes this one a retry.
        recalled_at = await session.scalar(
            select(Message.recalled_at).where(Message.id == message_id)
        )
        if recalled_at is not None:
            # Give the versions back: an idempotent retry must not take any.
            await transaction.rollback()
            return RecallResult(_recalled(row, recalled_at), parties, changed=False)
        # The clock is read under the lock: a recall that waited is judged by when it acts;
        # and it is the database's, the clock that stamped created_at.
        now = await db.now(session)
        if now >= row.created_at + timedelta(seconds=window_seconds):
            raise AppError(
                409,
                "recall_window_passed",
                f"a message can be recalled only within {window_seconds} seconds of sending",
            )
        await session.execute(
            update(Message).where(Message.id == message_id).values(body="", recalled_at=now)
        )
        data = _recalled(row, now)
        await _rewrite_message_entries(
            session,
            message_id,
            {row.sender: row.sender_version, row.recipient: row.recipient_version},
            orjson.dumps(data).decode(),
        )
        payload = orjson.dumps(
            {"message_id": message_id, "from": row.sender, "to": row.recipient}
        ).decode()
        await _insert_entries(session, versions, "recall", now, message_id, payload)
    return RecallResult(data, parties, changed=True)


def _recalled(row: Any, recalled_at: datetime) -> dict[str, Any]:
    return message_data(
        row.id, row.sender, row.recipient, "", row.client_msg_id, row.created_at, recalled_at
    )


async def _rewrite_message_entries(
    session: AsyncSession, message_id: int, versions: Mapping[str, int], payload: str
) -> None:
    """Make the original `message` entries show the recall to devices that read them later.

    Retention may have pruned them already: then there is nothing to rewrite, and the sync
    fallback reads the (already cleared) index row instead.
    """
    entries = or_(
        *(
            and_(InboxEntry.user_id == user, InboxEntry.version == version)
            for user, version in versions.items()
        )
    )
    # SKIP LOCKED: a row locked by someone else here can only be one that retention is
    # deleting; waiting for it while we hold the users' locks could deadlock with a job that
    # takes a user's lock after its deletes, and the row is going away anyway.
    locked = (
        await session.execute(
            select(InboxEntry.user_id, InboxEntry.version)
            .where(entries, InboxEntry.kind == "message", InboxEntry.message_id == message_id)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if locked:
        await session.execute(
            update(InboxEntry)
            .where(
                or_(
                    *(
                        and_(InboxEntry.user_id == e.user_id, InboxEntry.version == e.version)
                        for e in locked
                    )
                )
            )
            .values(data=payload)
        )


async def _insert_entries(
    session: AsyncSession,
    versions: Mapping[str, int],
    kind: str,
    now: datetime,
    message_id: int,
    payload: str,
) -> None:
    # One entry per party at that party's new version; a note to oneself has one party.
    await session.execute(
        insert(InboxEntry),
        [
            {
                "user_id": user,
                "version": version,
                "kind": kind,
                "created_at": now,
                "message_id": message_id,
                "data": payload,
            }
            for user, version in versions.items()
        ],
    )


async def mark_read(db: Database, reader: str, peer: str, up_to_message_id: int) -> ReadResult:
    """Move the reader's cursor forward and tell both parties; a step back is a no-op."""
    lo, hi = sorted((reader, peer))
    # The pair's one row holds both parties' cursors, the reader's in its own column.
    read_up_to_id = Conversation.cursor_of(reader, peer)
    ours = Conversation.of_pair(reader, peer)
    async with db.read_sessions() as session, session.begin():
        cursor = await session.scalar(select(read_up_to_id).where(ours))
        if cursor is None:
            raise AppError(404, "conversation_not_found", f"no conversation with {peer!r}")
        # A message's pair never changes, so this check needs no lock.
        in_conversation = await session.scalar(
            select(Message.id).where(
                Message.id == up_to_message_id, Message.pair_lo == lo, Message.pair_hi == hi
            )
        )
        if in_conversation is None:
            raise AppError(404, "message_not_found", f"no message {up_to_message_id} with {peer!r}")
        if cursor >= up_to_message_id:
            # The cursor never moves back: answer without a lock or a version.
            latest = await session.scalar(select(User.latest_version).where(User.user_id == reader))
            assert latest is not None
            return ReadResult(cursor, latest, changed=False)

    async with db.session() as session, session.begin() as transaction:
        # Same lock order as send (user-id order), so reads, recalls and sends of one pair
        # queue instead of deadlocking, and the versions commit in order.
        versions = await bump_versions(db, session, (reader, peer))
        # Every move of this cursor holds the reader's lock, so this conditional update
        # decides alone whether the cursor still moves forward. Every other write of the
        # pair's shared row (sends: last_message_id; the peer's reads: the peer's cursor)
        # holds both users' locks too, so none interleaves with it.
        moved = await session.scalar(
            update(Conversation)
            .where(ours, read_up_to_id < up_to_message_id)
            .values({read_up_to_id: up_to_message_id})
            .returning(read_up_to_id)
        )
        if moved is None:
            # A concurrent read got further first: give the versions back, report its cursor.
            cursor = await session.scalar(select(read_up_to_id).where(ours))
            assert cursor is not None
            await transaction.rollback()
            # Our bump was latest + 1 under the lock, so latest was the committed value.
            return ReadResult(cursor, versions[reader] - 1, changed=False)
        payload = orjson.dumps(
            {"reader": reader, "peer": peer, "up_to_message_id": up_to_message_id}
        ).decode()
        # The peer's entry is the read receipt; the reader's own clears its other devices.
        now = await db.now(session)  # one clock for every host's entries
        await _insert_entries(session, versions, "read", now, up_to_message_id, payload)
    return ReadResult(up_to_message_id, versions[reader], changed=True)
