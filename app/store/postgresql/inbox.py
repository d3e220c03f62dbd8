"""The inbox on PostgreSQL: the hot statements whole, on the driver (inbox.sql)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import sqlalchemy.exc
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.db.replicas import Replica
from app.errors import AppError
from app.inbox.messages import message_data
from app.store.inbox import (
    FetchedEntry,
    Outgoing,
    Page,
    Sent,
    check_since,
    entry_id_text,
    find_send,
    read_page_in_transaction,
)
from app.store.queries import load

__all__ = ["PostgresInbox"]

_SQL = load("inbox.sql")
_SEND = _SQL["send_message"]
_PAGE = _SQL["read_page"]
_PAGE_CHECKED = _SQL["read_page_checked"]
_BUMP = _SQL["bump_versions"]
_ACKS = _SQL["advance_cursors"]
_CONVERSATIONS = _SQL["conversations"]
# `before` when the caller gives none: above every message id (BIGINT).
_TOP = 2**63 - 1

# Every stored message payload starts with its id: {"id":123,"from":...}.
_ID_HEAD = '{"id":'
_TIME_KEY = '"created_at":"'
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # a stand-in: the database stamps created_at


class PostgresInbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def send(self, outgoing: Outgoing) -> Sent | None:
        o = outgoing
        # The payload is serialised once, here; the database splices in the message id and
        # its created_at (send_message): the text is cut around both.
        data = message_data(0, o.sender, o.recipient, o.body, o.client_msg_id, _EPOCH, None)
        tail = orjson.dumps(data).decode()[len(_ID_HEAD) + 1 :]
        cut = tail.rindex(_TIME_KEY) + len(_TIME_KEY)  # a body's quotes are escaped
        lo, hi = sorted((o.sender, o.recipient))
        params: dict[str, object] = {
            "sender": o.sender,
            "recipient": o.recipient,
            "parties": 1 if lo == hi else 2,
            "pair_lo": lo,
            "pair_hi": hi,
            "body": o.body,
            "client_msg_id": o.client_msg_id,
            "head": _ID_HEAD,
            "tail_a": tail[:cut],
            "tail_b": tail[tail.index('"', cut) :],
        }
        # Push off (push_wait None): the statement's pushers part matches no row.
        params["push_wait"] = o.push_wait
        params["pushed"] = o.recipient if lo != hi and o.push_wait is not None else None
        sql = _SEND
        try:
            async with self._db.driver() as driver:
                cursor = await driver.execute(sql, params)
                row = await cursor.fetchone()
        except psycopg.errors.UniqueViolation as exc:
            # A retry, or the same (sender, client_msg_id) committed while this send waited
            # for the sender's lock: the unique constraint decided, and the failed statement
            # took no version. Answer with the first result. (No look-up before the send: it
            # would cost every send a round trip to save a retry a short lock.)
            found = await self._repeated(o)
            if found is None:
                raise IntegrityError(sql, params, exc) from exc
            return found
        if row is None:
            return None
        message_id, sender_version, created_at = row
        return Sent({**data, "id": message_id, "created_at": created_at}, sender_version, True)

    async def _repeated(self, o: Outgoing) -> Sent | None:
        if o.client_msg_id is None:
            return None
        return await find_send(self._db, o.sender, o.client_msg_id)

    async def find_send(self, sender: str, client_msg_id: str) -> Sent | None:
        return await find_send(self._db, sender, client_msg_id)

    async def read_page(
        self,
        user_id: str,
        since: int,
        limit: int,
        *,
        since_id: str | None = None,
        primary: bool = False,
    ) -> Page:
        # The common case in one statement (one snapshot, one round trip), on the driver:
        # SQLAlchemy's row objects made a page of 1000 entries slower than the
        # two-statement transaction. Replicas first, unless the primary is asked for.
        replica = None if primary else self._db.replicas.pick()
        if replica is not None:
            written = self._db.replicas.written(user_id)
            page = await _from_replica(replica, user_id, since, limit, since_id, written)
            if page is not None:
                return page
        params = {"user_id": user_id, "since": since, "limit": limit}
        async with self._db.driver() as driver:
            cursor = await driver.execute(_page_statement(since_id), params)
            rows = await cursor.fetchall()
        latest, floor = rows[0][0], rows[0][1]
        check_since(since, since_id, latest, floor, rows[0][2])
        if since < floor:
            return await read_page_in_transaction(
                self._db.read_sessions, user_id, since, limit, since_id
            )
        found = _entries(rows)
        next_since = found[-1].version if found else since
        return Page(found, next_since, latest, next_since < latest, False)

    async def conversations(self, user_id: str, limit: int, before: int | None) -> dict[str, Any]:
        # One statement on the driver: the SQLAlchemy transaction of two statements (the
        # page, then the unread counts) cost the list most of its time.
        params = {"user_id": user_id, "before": before or _TOP, "limit": limit + 1}
        rows: list[Any] | None = None
        replica = self._db.replicas.pick()
        if replica is not None:
            try:
                async with replica.driver() as driver:
                    cursor = await driver.execute(_CONVERSATIONS, params)
                    rows = await cursor.fetchall()
            except (psycopg.Error, sqlalchemy.exc.SQLAlchemyError):
                # A replica never turns a read into an error: the primary answers.
                replica.failed("connection lost")
        if rows is None:
            async with self._db.driver() as driver:
                cursor = await driver.execute(_CONVERSATIONS, params)
                rows = await cursor.fetchall()
        page = rows[:limit]
        return {
            "conversations": [
                {
                    "kind": "direct",
                    "peer": peer,
                    "last_message": message_data(*message),
                    "unread_count": unread,
                }
                for peer, *message, unread in page
            ],
            "next_before": page[-1][1] if len(rows) > limit else None,
        }

    async def bump_versions(self, session: AsyncSession, user_ids: Iterable[str]) -> dict[str, int]:
        connection = await session.connection()
        result = await connection.exec_driver_sql(_BUMP, {"user_ids": sorted(set(user_ids))})
        rows: list[Any] = list(result.all())
        return dict(rows)

    async def advance_cursors(self, acks: Sequence[tuple[str, int]]) -> dict[str, tuple[int, int]]:
        params = {"device_ids": [d for d, _ in acks], "versions": [v for _, v in acks]}
        async with self._db.driver() as driver:
            cursor = await driver.execute(_ACKS, params)
            return {device: (acked, latest) for device, acked, latest in await cursor.fetchall()}


def _page_statement(since_id: str | None) -> str:
    return _PAGE if since_id is None else _PAGE_CHECKED


def _entries(rows: Sequence[Any]) -> list[FetchedEntry]:
    return [
        FetchedEntry(v, k, c, d, entry_id_text(i))
        for _, _, _, v, k, c, d, i in rows
        if v is not None
    ]


async def _from_replica(
    replica: Replica,
    user_id: str,
    since: int,
    limit: int,
    since_id: str | None,
    written: int = 0,
) -> Page | None:
    """The page from a replica, or None when only the primary can answer it right.

    A replica's inbox for a user is a gap-free prefix of the primary's, so a page with
    entries is correct, only perhaps shorter (has_more then sends the client back at once).
    The primary answers instead when the replica has nothing new (the client may have
    been woken for a version not yet replayed: a long-poll must not go back to sleep),
    when `since` is ahead of what it has (never a false 409 since_ahead), when the user is
    not replicated yet, below the floor (the history fallback reads the primary), and when
    the entry at `since` is not the client's (the primary says whether that is a 409), and
    when it has not replayed the user's own last write (`written`, see Replicas.wrote).
    """
    params = {"user_id": user_id, "since": since, "limit": limit}
    try:
        async with replica.driver() as driver:
            cursor = await driver.execute(_page_statement(since_id), params)
            rows: list[Any] = await cursor.fetchall()
    except (psycopg.Error, sqlalchemy.exc.SQLAlchemyError):
        # Down or failing: skipped until its next check finds it well; the primary answers.
        replica.failed("connection lost")
        return None
    if not rows:
        return None
    latest, floor = rows[0][0], rows[0][1]
    found = _entries(rows)
    if since > latest or since < floor or not found or latest < written:
        return None
    try:
        check_since(since, since_id, latest, floor, rows[0][2])
    except AppError:
        return None
    return Page(found, found[-1].version, latest, found[-1].version < latest, False)
