"""The groups store on PostgreSQL: psycopg on the single-statement pool's connections, the
statements whole and by name in groups.sql. A write is one transaction on one connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
import psycopg

from app.db.engine import Database
from app.store.flight import SharedGroupReads
from app.store.groups import (
    Appended,
    Conflict,
    ConversationItem,
    EventRow,
    GroupRow,
    MemberRow,
    MessageRow,
    SentMessage,
)
from app.store.queries import load

__all__ = ["PgGroupStore"]

SQL = load("groups.sql")
# `before` when the caller gives none: above every message id (BIGINT).
_TOP = 2**63 - 1


def _group(row: Sequence[Any]) -> GroupRow:
    return GroupRow(*row[:9])


def _member(row: Sequence[Any]) -> MemberRow:
    return MemberRow(*row[:5])


class _Work:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self.group_id = ""
        self.rolled_back = False

    async def _all(self, name: str, **params: Any) -> list[Any]:
        cursor = await self._conn.execute(SQL[name], params)
        return await cursor.fetchall() if cursor.description else []

    async def lock(self, group_id: str) -> GroupRow | None:
        self.group_id = group_id
        rows = await self._all("lock_group", group_id=group_id)
        return _group(rows[0]) if rows else None

    async def create(
        self, group_id: str, title: str, creator: str, client_group_id: str | None
    ) -> GroupRow:
        self.group_id = group_id
        try:
            rows = await self._all(
                "create_group",
                group_id=group_id,
                title=title,
                creator=creator,
                client_group_id=client_group_id,
            )
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(str(exc)) from exc
        return _group(rows[0])

    async def existing_users(self, user_ids: Iterable[str]) -> set[str]:
        rows = await self._all("existing_users", user_ids=sorted(set(user_ids)))
        return {row[0] for row in rows}

    async def lock_users(self, user_ids: Iterable[str], *, news: bool = False) -> None:
        if news:
            await self._all(
                "lock_users_news", group_id=self.group_id, user_ids=sorted(set(user_ids))
            )
        else:
            await self._all("lock_users", user_ids=sorted(set(user_ids)))

    async def member(self, user_id: str) -> MemberRow | None:
        rows = await self._all("member", group_id=self.group_id, user_id=user_id)
        return _member(rows[0]) if rows else None

    async def members(self) -> list[MemberRow]:
        return [_member(row) for row in await self._all("members", group_id=self.group_id)]

    async def members_among(self, user_ids: Iterable[str]) -> set[str]:
        rows = await self._all(
            "members_among", group_id=self.group_id, user_ids=sorted(set(user_ids))
        )
        return {row[0] for row in rows}

    async def heir(self, leaving: str) -> MemberRow | None:
        rows = await self._all("heir", group_id=self.group_id, leaving=leaving)
        return _member(rows[0]) if rows else None

    async def add_members(self, rows: Sequence[MemberRow]) -> None:
        await self._all(
            "add_members",
            group_id=self.group_id,
            user_ids=[r.user_id for r in rows],
            roles=[r.role for r in rows],
            joined=[r.joined_seq for r in rows],
            read=[r.read_seq for r in rows],
        )

    async def delete_member(self, user_id: str) -> None:
        await self._all("delete_member", group_id=self.group_id, user_id=user_id)

    async def set_role(self, user_id: str, role: str) -> None:
        await self._all("set_role", group_id=self.group_id, user_id=user_id, role=role)

    async def add_large(self, actor: str, user_ids: Sequence[str], first_seq: int) -> list[str]:
        rows = await self._all(
            "add_large",
            group_id=self.group_id,
            actor=actor,
            user_ids=list(user_ids),
            first=first_seq,
            last=first_seq + len(user_ids) - 1,
        )
        return sorted(row[0] for row in rows)

    async def update_group(
        self, *, title: str, owner: str | None, member_count: int, large: bool
    ) -> None:
        await self._all(
            "update_group",
            group_id=self.group_id,
            title=title,
            owner=owner,
            member_count=member_count,
            large=large,
        )

    async def append_event(
        self,
        kind: str,
        actor: str,
        data: dict[str, Any],
        recipients: Iterable[str],
        *,
        message_id: int | None = None,
        entry: dict[str, Any] | None = None,
        news: bool = False,
    ) -> Appended:
        rows = await self._all(
            "append_event",
            group_id=self.group_id,
            kind=kind,
            actor=actor,
            data=orjson.dumps(data).decode(),
            recipients=sorted(set(recipients)),
            message_id=message_id,
            entry_kind="group" if entry is None else "recall",
            entry=None if entry is None else orjson.dumps(entry).decode(),
            news=news,
        )
        seq, created_at = rows[0][0], rows[0][1]
        versions = {row[2]: row[3] for row in rows if row[2] is not None and not row[4]}
        noticed = tuple(sorted(row[2] for row in rows if row[2] is not None and row[4]))
        return Appended(seq, created_at, versions, noticed)

    async def recall(self, message_id: int) -> datetime | None:
        rows = await self._all("recall_message", message_id=message_id)
        if not rows:
            return None
        recalled_at: datetime = rows[0][0]
        return recalled_at

    async def set_event_data(self, seq: int, data: dict[str, Any]) -> None:
        await self._all(
            "set_event_data", group_id=self.group_id, seq=seq, data=orjson.dumps(data).decode()
        )

    async def now(self) -> datetime:
        rows = await self._all("now")
        moment: datetime = rows[0][0]
        return moment

    async def rollback(self) -> None:
        self.rolled_back = True


class PgGroupStore(SharedGroupReads):
    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db
        self._large: set[str] = set()  # the large groups this process has sent to

    @asynccontextmanager
    async def work(self) -> AsyncIterator[_Work]:
        async with self._db.driver() as conn, conn.transaction():
            work = _Work(conn)
            yield work
            if work.rolled_back:
                raise psycopg.Rollback()

    async def _all(self, name: str, **params: Any) -> list[Any]:
        async with self._db.driver() as conn:
            cursor = await conn.execute(SQL[name], params)
            return await cursor.fetchall() if cursor.description else []

    async def find_created(self, creator: str, client_group_id: str) -> str | None:
        rows = await self._all("find_created", creator=creator, client_group_id=client_group_id)
        return rows[0][0] if rows else None

    async def view(self, group_id: str, user_id: str) -> tuple[GroupRow, MemberRow] | None:
        rows = await self._all("view", group_id=group_id, user_id=user_id)
        return (_group(rows[0]), _member(rows[0][9:])) if rows else None

    async def cover_batch(self, group_id: str, readers: Sequence[tuple[str, int]]) -> int | None:
        async with self._db.driver() as conn, conn.transaction():
            cursor = await conn.execute(SQL["cover_lock"], {"group_id": group_id})
            row = await cursor.fetchone()
            if row is None:
                return None
            latest: int = row[0]
            covered = sorted({user for user, through in readers if through >= latest})
            if covered:
                await conn.execute(SQL["cover"], {"group_id": group_id, "user_ids": covered})
            return latest

    async def members(self, group_id: str, after: str | None, limit: int) -> list[MemberRow]:
        rows = await self._all("members_page", group_id=group_id, after=after or "", limit=limit)
        return [_member(row) for row in rows]

    async def read_events(self, group_id: str, after_seq: int, limit: int) -> list[EventRow]:
        rows = await self._all("events", group_id=group_id, after_seq=after_seq, limit=limit)
        return [EventRow(*row) for row in rows]

    async def send(
        self,
        group_id: str,
        sender: str,
        body: str,
        client_msg_id: str | None,
        push_wait: float | None,
    ) -> SentMessage | None:
        params: dict[str, Any] = {
            "group_id": group_id,
            "sender": sender,
            "body": body,
            "client_msg_id": client_msg_id,
            "push_wait": push_wait,  # None: push is off, no pusher is marked
        }
        # A group is sent to as small or large, which the group's row says under its lock;
        # the guess is this process's memory of the large groups (few: each has more
        # members than the fan-out limit). A wrong guess (the group crossed the limit since)
        # wrote nothing and is sent again in the other mode.
        large = group_id in self._large
        for _ in range(2):
            sent = await self._send(params, large)
            if not isinstance(sent, bool):
                return sent
            large = sent
            if large:
                self._large.add(group_id)
            else:
                self._large.discard(group_id)
        raise AssertionError("a group's mode changed twice while it was locked")

    async def _send(self, params: dict[str, Any], large: bool) -> SentMessage | bool | None:
        """One transaction, sent as one pipeline (one round trip, not four): BEGIN, the
        group's lock, the send statement of the mode guessed, COMMIT. The server runs them
        in order, so the send statement's snapshot still starts after the lock was granted
        (groups.sql send_message). The message; None when the group does not exist or the
        sender is not a member; the group's mode (True: large) when the guess was wrong, in
        which case the statement wrote nothing."""
        try:
            async with self._db.driver() as conn:
                try:
                    async with conn.pipeline():
                        await conn.execute("BEGIN")
                        lock = await conn.execute(SQL["lock_group_for_send"], params)
                        cursor = await conn.execute(
                            SQL["send_large" if large else "send_message"], params
                        )
                        await conn.execute("COMMIT")
                except psycopg.Error:
                    # The transaction failed in the pipeline: the COMMIT was skipped and the
                    # connection is in a failed transaction until it is rolled back.
                    if not conn.broken:
                        await conn.rollback()
                    raise
                locked = await lock.fetchone()
                row = await cursor.fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(str(exc)) from exc
        if locked is None:
            return None
        if locked[1] != large:
            return bool(locked[1])
        if row is None:  # not a member: nothing was written
            return None
        return SentMessage(orjson.loads(row[2]), row[1], list(row[3] or []))

    async def existing_send(self, sender: str, client_msg_id: str) -> tuple[MessageRow, int] | None:
        rows = await self._all("existing_send", sender=sender, client_msg_id=client_msg_id)
        if not rows or rows[0][2] is None:
            return None
        found = await self.message(rows[0][0])
        assert found is not None
        return found, rows[0][1]

    async def message(self, message_id: int) -> MessageRow | None:
        rows = await self._all("message_row", message_id=message_id)
        return MessageRow(*rows[0]) if rows and rows[0][6] is not None else None

    async def mark_read(
        self, group_id: str, reader: str, up_to_seq: int, data: dict[str, Any]
    ) -> tuple[int, int, bool] | None:
        async with self._db.driver() as conn, conn.transaction():
            cursor = await conn.execute(SQL["lock_reader"], {"reader": reader})
            locked = await cursor.fetchone()
            assert locked is not None
            params = {"group_id": group_id, "reader": reader, "up_to_seq": up_to_seq}
            cursor = await conn.execute(SQL["move_read_cursor"], params)
            if await cursor.fetchone() is None:
                # Not moved: not a member, or the cursor is already there (never back).
                cursor = await conn.execute(SQL["member"], {**params, "user_id": reader})
                member = await cursor.fetchone()
                return None if member is None else (member[3], locked[0], False)
            payload = orjson.dumps(data).decode()
            cursor = await conn.execute(SQL["read_entry"], {"reader": reader, "data": payload})
            entry = await cursor.fetchone()
            assert entry is not None
        return up_to_seq, entry[0], True

    async def conversations(
        self, user_id: str, before: int | None, limit: int
    ) -> list[ConversationItem]:
        rows = await self._all("conversations", user_id=user_id, before=before or _TOP, limit=limit)
        return [
            ConversationItem(
                group_id=r[0],
                title=r[1],
                read_seq=r[2],
                last_message=MessageRow(r[3], r[4], r[5], r[6], r[7], r[8], r[0], r[9]),
                unread_count=r[10],
            )
            for r in rows
        ]

    async def latest_version(self, user_id: str) -> int:
        rows = await self._all("latest_version", user_id=user_id)
        return int(rows[0][0])

    async def groups_of(self, user_id: str) -> list[tuple[str, int]]:
        return [(r[0], r[1]) for r in await self._all("groups_of", user_id=user_id)]
