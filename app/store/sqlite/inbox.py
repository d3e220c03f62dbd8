"""The inbox on SQLite: the same units of work as PostgreSQL's, statement by statement.

SQLite has one writer at a time (every write transaction begins IMMEDIATE,
app.store.sqlite.database): the lock rule holds by construction, there is no order to keep.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.db.models import Conversation, Device, InboxEntry, Message, Pusher, User, utcnow
from app.inbox.messages import message_data
from app.store.inbox import Outgoing, Page, Sent, find_send, read_page_in_transaction

__all__ = ["SqliteInbox"]

_ADVANCE = (
    update(Device)
    .where(Device.device_id == bindparam("d"), Device.acked_version < bindparam("v"))
    .values(acked_version=bindparam("v"))
)


class SqliteInbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def send(self, outgoing: Outgoing) -> Sent | None:
        try:
            return await self._send(outgoing)
        except IntegrityError:
            # A retry of a stored (sender, client_msg_id): the unique constraint decided.
            if outgoing.client_msg_id is not None:
                found = await find_send(self._db, outgoing.sender, outgoing.client_msg_id)
                if found is not None:
                    return found
            raise

    async def _send(self, o: Outgoing) -> Sent | None:
        now = utcnow()  # SQLite serves one process on one host, whose clock this is
        data = message_data(0, o.sender, o.recipient, o.body, o.client_msg_id, now, None)
        async with self._db.session() as session, session.begin() as transaction:
            versions = await self.bump_versions(session, (o.sender, o.recipient))
            if o.recipient not in versions or o.sender not in versions:
                await transaction.rollback()  # give the sender's version back
                return None
            lo, hi = sorted((o.sender, o.recipient))
            message_id = await session.scalar(
                insert(Message)
                .values(
                    sender=o.sender,
                    recipient=o.recipient,
                    pair_lo=lo,
                    pair_hi=hi,
                    body=o.body,
                    client_msg_id=o.client_msg_id,
                    sender_version=versions[o.sender],
                    recipient_version=versions[o.recipient],
                    created_at=now,
                )
                .returning(Message.id)
            )
            assert message_id is not None
            data["id"] = message_id
            payload = orjson.dumps(data).decode()
            await session.execute(
                insert(InboxEntry),
                [
                    {
                        "user_id": user,
                        "version": version,
                        "kind": "message",
                        "created_at": now,
                        "message_id": message_id,
                        "data": payload,
                    }
                    for user, version in versions.items()
                ],
            )
            # The pair's one row, shared by both parties; inserted by the pair's first
            # message (the one writer cannot race another first message).
            moved = await session.execute(
                update(Conversation)
                .where(Conversation.pair_lo == lo, Conversation.pair_hi == hi)
                .values(last_message_id=message_id)
            )
            if moved.rowcount == 0:  # type: ignore[attr-defined]
                await session.execute(
                    insert(Conversation).values(pair_lo=lo, pair_hi=hi, last_message_id=message_id)
                )
            if o.push_wait is not None and o.recipient != o.sender:
                # The recipient's pushers fall due push_wait after the first message of a
                # delay window; one in flight (leased) is told to look again when it settles.
                mine = Pusher.user_id == o.recipient
                await session.execute(
                    update(Pusher)
                    .where(mine, Pusher.due_at.is_(None))
                    .values(due_at=now + timedelta(seconds=o.push_wait))
                )
                await session.execute(
                    update(Pusher).where(mine, Pusher.leased_until.is_not(None)).values(news=True)
                )
        return Sent(data, versions[o.sender], created=True)

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
        # A deferred transaction is one snapshot in WAL; there are no replicas.
        return await read_page_in_transaction(
            self._db.read_sessions, user_id, since, limit, since_id
        )

    async def conversations(self, user_id: str, limit: int, before: int | None) -> dict[str, Any]:
        from app.inbox import history

        return await history.list_conversations(self._db, user_id, limit, before)

    async def bump_versions(self, session: AsyncSession, user_ids: Iterable[str]) -> dict[str, int]:
        # The transaction holds SQLite's one write lock from its BEGIN IMMEDIATE.
        rows = await session.execute(
            update(User)
            .where(User.user_id.in_(sorted(set(user_ids))))
            .values(latest_version=User.latest_version + 1)
            .returning(User.user_id, User.latest_version)
        )
        return {row.user_id: row.latest_version for row in rows}

    async def advance_cursors(self, acks: Sequence[tuple[str, int]]) -> dict[str, tuple[int, int]]:
        device_ids = sorted({device for device, _ in acks})
        async with self._db.session() as session, session.begin():
            rows = await session.execute(
                select(Device.device_id, Device.acked_version, User.latest_version)
                .join(User, User.user_id == Device.user_id)
                .where(Device.device_id.in_(device_ids))
            )
            found = {row.device_id: (row.acked_version, row.latest_version) for row in rows}
            cursors = {device: acked for device, (acked, _) in found.items()}
            for device, version in acks:
                if device in found and version <= found[device][1]:
                    cursors[device] = max(cursors[device], version)
            moved = [{"d": d, "v": v} for d, v in cursors.items() if v > found[d][0]]
            if moved:
                # Core executemany on the connection: the ORM's bulk UPDATE would try to
                # synchronise session objects, and there are none.
                connection = await session.connection()
                await connection.execute(_ADVANCE, moved)
        return {d: (cursors[d], latest) for d, (_, latest) in found.items()}
