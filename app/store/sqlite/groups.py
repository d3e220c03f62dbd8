"""The groups store on SQLite: the same units of work as the PostgreSQL store, statement by
statement. A write transaction starts with BEGIN IMMEDIATE (app.store.sqlite.database), so
writers run one at a time: there is no lock order to keep, and every read inside sees the
latest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction

from app.db.engine import Database
from app.db.models import Group, GroupEvent, GroupMember, InboxEntry, Message, Pusher, User
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

__all__ = ["SqliteGroupStore"]

_GROUP = (
    Group.group_id,
    Group.title,
    Group.owner,
    Group.creator,
    Group.client_group_id,
    Group.latest_seq,
    Group.member_count,
    Group.large,
    Group.created_at,
)
_MEMBER = (GroupMember.user_id, GroupMember.role, GroupMember.joined_seq, GroupMember.read_seq)
_ME = (*_MEMBER, GroupMember.news_seq)
_MESSAGE = (
    Message.id,
    Message.sender,
    Message.body,
    Message.client_msg_id,
    Message.created_at,
    Message.recalled_at,
    Message.group_id,
    Message.seq,
)


def _message(row: Any) -> MessageRow:
    return MessageRow(*row)


def _now() -> datetime:
    return datetime.now(UTC)  # SQLite serves one process on one host: its clock is the one


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def _bump(session: AsyncSession, user_ids: Iterable[str]) -> dict[str, int]:
    rows = await session.execute(
        update(User)
        .where(User.user_id.in_(sorted(set(user_ids))))
        .values(latest_version=User.latest_version + 1)
        .returning(User.user_id, User.latest_version)
    )
    return {row.user_id: row.latest_version for row in rows}


def _news_payload(group_id: str, seq: int) -> str:
    return orjson.dumps({"group_id": group_id, "seq": seq}).decode()


async def _write_news(
    session: AsyncSession, group_id: str, user_ids: Iterable[str], seq: int, now: datetime
) -> dict[str, int]:
    """A group_news entry for each of these members at its next version; news_seq = seq."""
    users = sorted(set(user_ids))
    if not users:
        return {}
    await session.execute(
        update(GroupMember)
        .where(GroupMember.group_id == group_id, GroupMember.user_id.in_(users))
        .values(news_seq=seq)
    )
    versions = await _bump(session, users)
    await session.execute(
        insert(InboxEntry),
        _entries(versions, "group_news", now, None, _news_payload(group_id, seq)),
    )
    return versions


async def _unnoticed(session: AsyncSession, group_id: str) -> list[str]:
    """The members holding no uncovered news (the partial index on news_seq IS NULL)."""
    rows = await session.scalars(
        select(GroupMember.user_id).where(
            GroupMember.group_id == group_id, GroupMember.news_seq.is_(None)
        )
    )
    return list(rows)


def _entries(
    versions: dict[str, int], kind: str, now: datetime, message_id: int | None, data: str
) -> list[dict[str, Any]]:
    return [
        {
            "user_id": user,
            "version": version,
            "kind": kind,
            "created_at": now,
            "message_id": message_id,
            "data": data,
        }
        for user, version in versions.items()
    ]


class _Work:
    def __init__(self, session: AsyncSession, transaction: AsyncSessionTransaction) -> None:
        self._session = session
        self._transaction = transaction
        self.group_id = ""
        # One clock reading per unit of work, as PostgreSQL's now() is the transaction's
        # start: a recall's recalled_at and its entry's created_at are the same instant.
        self._moment: datetime | None = None

    def _clock(self) -> datetime:
        if self._moment is None:
            self._moment = _now()
        return self._moment

    async def lock(self, group_id: str) -> GroupRow | None:
        self.group_id = group_id
        row = (
            await self._session.execute(select(*_GROUP).where(Group.group_id == group_id))
        ).first()
        return GroupRow(*row) if row is not None else None

    async def create(
        self, group_id: str, title: str, creator: str, client_group_id: str | None
    ) -> GroupRow:
        self.group_id = group_id
        try:
            row = (
                await self._session.execute(
                    insert(Group)
                    .values(
                        group_id=group_id,
                        title=title,
                        owner=creator,
                        creator=creator,
                        client_group_id=client_group_id,
                        latest_seq=0,
                        member_count=0,
                        large=False,
                        created_at=self._clock(),
                    )
                    .returning(*_GROUP)
                )
            ).one()
        except IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        return GroupRow(*row)

    async def existing_users(self, user_ids: Iterable[str]) -> set[str]:
        rows = await self._session.scalars(
            select(User.user_id).where(User.user_id.in_(sorted(set(user_ids))))
        )
        return set(rows)

    async def lock_users(self, user_ids: Iterable[str], *, news: bool = False) -> None:
        pass  # the transaction holds the database's one write lock already

    async def member(self, user_id: str) -> MemberRow | None:
        row = (
            await self._session.execute(
                select(*_ME).where(
                    GroupMember.group_id == self.group_id, GroupMember.user_id == user_id
                )
            )
        ).first()
        return MemberRow(*row) if row is not None else None

    async def members(self) -> list[MemberRow]:
        rows = await self._session.execute(
            select(*_MEMBER)
            .where(GroupMember.group_id == self.group_id)
            .order_by(GroupMember.user_id)
        )
        return [MemberRow(*row) for row in rows]

    async def members_among(self, user_ids: Iterable[str]) -> set[str]:
        rows = await self._session.scalars(
            select(GroupMember.user_id).where(
                GroupMember.group_id == self.group_id,
                GroupMember.user_id.in_(sorted(set(user_ids))),
            )
        )
        return set(rows)

    async def heir(self, leaving: str) -> MemberRow | None:
        row = (
            await self._session.execute(
                select(*_ME)
                .where(
                    GroupMember.group_id == self.group_id,
                    GroupMember.user_id != leaving,
                    GroupMember.role.in_(("admin", "member")),
                )
                .order_by(GroupMember.role == "member", GroupMember.joined_seq, GroupMember.user_id)
                .limit(1)
            )
        ).first()
        return MemberRow(*row) if row is not None else None

    async def add_members(self, rows: Sequence[MemberRow]) -> None:
        # A new member's row takes the group's newest message, so the group is listed by it;
        # none in a large group (its sends write no member row: the list reads the group's).
        large, last = (
            await self._session.execute(
                select(Group.large, Group.last_message_id).where(Group.group_id == self.group_id)
            )
        ).one()
        listed = None if large else last or 0
        await self._session.execute(
            # render_nulls: the ORM's bulk insert would leave a None out, and the column's
            # default (0) would take its place.
            insert(GroupMember).execution_options(render_nulls=True),
            [
                {
                    "group_id": self.group_id,
                    "user_id": r.user_id,
                    "role": r.role,
                    "joined_seq": r.joined_seq,
                    "read_seq": r.read_seq,
                    "last_message_id": listed,
                }
                for r in rows
            ],
        )

    async def delete_member(self, user_id: str) -> None:
        await self._session.execute(
            delete(GroupMember).where(
                GroupMember.group_id == self.group_id, GroupMember.user_id == user_id
            )
        )

    async def set_role(self, user_id: str, role: str) -> None:
        await self._session.execute(
            update(GroupMember)
            .where(GroupMember.group_id == self.group_id, GroupMember.user_id == user_id)
            .values(role=role)
        )

    async def add_large(self, actor: str, user_ids: Sequence[str], first_seq: int) -> list[str]:
        # Set-based, as PostgreSQL's one statement: the same rows as appending the events one
        # by one, in a handful of statements whatever the number of users.
        if not user_ids:
            return []
        session = self._session
        last = first_seq + len(user_ids) - 1
        seqs = dict(zip(user_ids, range(first_seq, last + 1), strict=True))
        now = self._clock()
        stamp = _stamp(now)
        await session.execute(
            update(Group).where(Group.group_id == self.group_id).values(latest_seq=last)
        )
        # The members holding no news get one at the batch's first event. Read before the
        # added are in: the last of them holds none either, and its news is the next event's.
        pending = select(GroupMember.user_id).where(
            GroupMember.group_id == self.group_id, GroupMember.news_seq.is_(None)
        )
        noticed = {
            row.user_id: row.latest_version
            for row in await session.execute(
                update(User)
                .where(User.user_id.in_(pending))
                .values(latest_version=User.latest_version + 1)
                .returning(User.user_id, User.latest_version)
            )
        }
        if noticed:
            await session.execute(
                update(GroupMember)
                .where(GroupMember.group_id == self.group_id, GroupMember.news_seq.is_(None))
                .values(news_seq=first_seq)
            )
        # Each joins at its own event; each but the last holds news from the next one. No
        # newest message on a large group's member rows: the conversation list reads the
        # group's row.
        await session.execute(
            insert(GroupMember).execution_options(render_nulls=True),
            [
                {
                    "group_id": self.group_id,
                    "user_id": user,
                    "role": "member",
                    "joined_seq": seq,
                    "read_seq": seq,
                    "news_seq": seq + 1 if seq < last else None,
                    "last_message_id": None,
                }
                for user, seq in seqs.items()
            ],
        )
        await session.execute(
            insert(GroupEvent).execution_options(render_nulls=True),
            [
                {
                    "group_id": self.group_id,
                    "seq": seq,
                    "kind": "member_added",
                    "actor": actor,
                    "created_at": now,
                    "message_id": None,
                    "data": orjson.dumps({"user_id": user}).decode(),
                }
                for user, seq in seqs.items()
            ],
        )
        # Two versions for each added but the last: its event's entry, then the news.
        versions = {
            row.user_id: row.latest_version
            for row in await session.execute(
                update(User)
                .where(User.user_id.in_(sorted(seqs)))
                .values(
                    latest_version=User.latest_version
                    + case((User.user_id == user_ids[-1], 1), else_=2)
                )
                .returning(User.user_id, User.latest_version)
            )
        }
        entries: list[dict[str, Any]] = []
        for user, version in versions.items():
            seq = seqs[user]
            event = {
                "seq": seq,
                "kind": "member_added",
                "created_at": stamp,
                "actor": actor,
                "data": {"user_id": user},
            }
            payload = orjson.dumps({"group_id": self.group_id, "event": event}).decode()
            if seq < last:
                entries += _entries({user: version - 1}, "group", now, None, payload)
                entries += _entries(
                    {user: version}, "group_news", now, None, _news_payload(self.group_id, seq + 1)
                )
            else:
                entries += _entries({user: version}, "group", now, None, payload)
        entries += _entries(
            noticed, "group_news", now, None, _news_payload(self.group_id, first_seq)
        )
        await session.execute(insert(InboxEntry), entries)
        return sorted(noticed)

    async def update_group(
        self, *, title: str, owner: str | None, member_count: int, large: bool
    ) -> None:
        was_large, last = (
            await self._session.execute(
                select(Group.large, Group.last_message_id).where(Group.group_id == self.group_id)
            )
        ).one()
        await self._session.execute(
            update(Group)
            .where(Group.group_id == self.group_id)
            .values(title=title, owner=owner, member_count=member_count, large=large)
        )
        if was_large != large:
            # The mode changes: a small group's members are listed by their own rows, a
            # large group's by the group's row (its sends write no member row).
            await self._session.execute(
                update(GroupMember)
                .where(GroupMember.group_id == self.group_id)
                .values(last_message_id=None if large else last or 0)
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
        session = self._session
        seq = await session.scalar(
            update(Group)
            .where(Group.group_id == self.group_id)
            .values(latest_seq=Group.latest_seq + 1)
            .returning(Group.latest_seq)
        )
        assert seq is not None
        now = self._clock()
        await session.execute(
            insert(GroupEvent).values(
                group_id=self.group_id,
                seq=seq,
                kind=kind,
                actor=actor,
                created_at=now,
                message_id=message_id,
                data=orjson.dumps(data).decode(),
            )
        )
        versions = await _bump(session, recipients)
        if entry is None:
            event = {"seq": seq, "kind": kind, "created_at": _stamp(now), "actor": actor}
            payload = orjson.dumps({"group_id": self.group_id, "event": {**event, "data": data}})
        else:
            # A recall entry names the event's seq: the member's log position moves past it.
            payload = orjson.dumps({**entry, "seq": seq})
        if versions:
            await session.execute(
                insert(InboxEntry),
                _entries(
                    versions,
                    "group" if entry is None else "recall",
                    now,
                    message_id,
                    payload.decode(),
                ),
            )
        noticed: dict[str, int] = {}
        if news:
            direct = set(versions)
            unnoticed = [u for u in await _unnoticed(session, self.group_id) if u not in direct]
            noticed = await _write_news(session, self.group_id, unnoticed, seq, now)
        return Appended(seq, now, versions, tuple(sorted(noticed)))

    async def recall(self, message_id: int) -> datetime | None:
        now = self._clock()
        done = await self._session.scalar(
            update(Message)
            .where(Message.id == message_id, Message.recalled_at.is_(None))
            .values(body="", recalled_at=now)
            .returning(Message.id)
        )
        return now if done is not None else None

    async def set_event_data(self, seq: int, data: dict[str, Any]) -> None:
        await self._session.execute(
            update(GroupEvent)
            .where(GroupEvent.group_id == self.group_id, GroupEvent.seq == seq)
            .values(data=orjson.dumps(data).decode())
        )

    async def now(self) -> datetime:
        return self._clock()

    async def rollback(self) -> None:
        await self._transaction.rollback()


class SqliteGroupStore(SharedGroupReads):
    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db

    @asynccontextmanager
    async def work(self) -> AsyncIterator[_Work]:
        async with self._db.session() as session, session.begin() as transaction:
            yield _Work(session, transaction)

    async def find_created(self, creator: str, client_group_id: str) -> str | None:
        async with self._db.read_sessions() as session:
            return await session.scalar(
                select(Group.group_id).where(
                    Group.creator == creator, Group.client_group_id == client_group_id
                )
            )

    async def view(self, group_id: str, user_id: str) -> tuple[GroupRow, MemberRow] | None:
        async with self._db.read_sessions() as session:
            row = (
                await session.execute(
                    select(*_GROUP, *_ME)
                    .join(GroupMember, GroupMember.group_id == Group.group_id)
                    .where(Group.group_id == group_id, GroupMember.user_id == user_id)
                )
            ).first()
        if row is None:
            return None
        return GroupRow(*row[:9]), MemberRow(row[9], row[10], row[11], row[12], row[13])

    async def cover_batch(self, group_id: str, readers: Sequence[tuple[str, int]]) -> int | None:
        # One write transaction (BEGIN IMMEDIATE): writers run one at a time, so no event
        # commits between the latest seq read here and the news cleared.
        async with self._db.session() as session, session.begin():
            latest = await session.scalar(
                select(Group.latest_seq).where(Group.group_id == group_id)
            )
            if latest is None:
                return None
            covered = sorted({user for user, through in readers if through >= latest})
            if covered:
                await session.execute(
                    update(GroupMember)
                    .where(
                        GroupMember.group_id == group_id,
                        GroupMember.user_id.in_(covered),
                        GroupMember.news_seq.is_not(None),
                    )
                    .values(news_seq=None)
                )
            return latest

    async def members(self, group_id: str, after: str | None, limit: int) -> list[MemberRow]:
        async with self._db.read_sessions() as session:
            rows = await session.execute(
                select(*_MEMBER)
                .where(GroupMember.group_id == group_id, GroupMember.user_id > (after or ""))
                .order_by(GroupMember.user_id)
                .limit(limit)
            )
            return [MemberRow(*row) for row in rows]

    async def read_events(self, group_id: str, after_seq: int, limit: int) -> list[EventRow]:
        async with self._db.read_sessions() as session:
            rows = await session.execute(
                select(
                    GroupEvent.seq,
                    GroupEvent.kind,
                    GroupEvent.actor,
                    GroupEvent.created_at,
                    GroupEvent.data,
                )
                .where(GroupEvent.group_id == group_id, GroupEvent.seq > after_seq)
                .order_by(GroupEvent.seq)
                .limit(limit)
            )
            return [EventRow(*row) for row in rows]

    async def send(
        self,
        group_id: str,
        sender: str,
        body: str,
        client_msg_id: str | None,
        push_wait: float | None,
    ) -> SentMessage | None:
        try:
            async with self._db.session() as session, session.begin() as transaction:
                group = (
                    await session.execute(
                        select(Group.latest_seq, Group.large).where(Group.group_id == group_id)
                    )
                ).first()
                is_member = await session.scalar(
                    select(GroupMember.user_id).where(
                        GroupMember.group_id == group_id, GroupMember.user_id == sender
                    )
                )
                if group is None or is_member is None:
                    await transaction.rollback()
                    return None
                seq, large = group.latest_seq + 1, group.large
                now = _now()
                if large:
                    # Logged once: group_news for the members holding none (the sender is
                    # one like any other); its version is the sender's latest.
                    versions = await _write_news(
                        session, group_id, await _unnoticed(session, group_id), seq, now
                    )
                else:
                    members = await session.scalars(
                        select(GroupMember.user_id).where(GroupMember.group_id == group_id)
                    )
                    versions = await _bump(session, members)
                sender_version = versions.get(sender)
                if sender_version is None:
                    sender_version = await session.scalar(
                        select(User.latest_version).where(User.user_id == sender)
                    )
                    assert sender_version is not None
                message_id = await session.scalar(
                    insert(Message)
                    .values(
                        sender=sender,
                        body=body,
                        client_msg_id=client_msg_id,
                        sender_version=sender_version,
                        created_at=now,
                        group_id=group_id,
                        seq=seq,
                    )
                    .returning(Message.id)
                )
                assert message_id is not None
                message = {
                    "id": message_id,
                    "from": sender,
                    "to": None,
                    "body": body,
                    "client_msg_id": client_msg_id,
                    "created_at": _stamp(now),
                    "recalled_at": None,
                    "group_id": group_id,
                    "seq": seq,
                }
                data = orjson.dumps(message).decode()
                await session.execute(
                    insert(GroupEvent).values(
                        group_id=group_id,
                        seq=seq,
                        kind="message",
                        actor=sender,
                        created_at=now,
                        message_id=message_id,
                        data=data,
                    )
                )
                await session.execute(
                    update(Group)
                    .where(Group.group_id == group_id)
                    .values(latest_seq=seq, last_message_id=message_id)
                )
                if not large:
                    # The group moves to the top of every member's conversation list.
                    await session.execute(
                        update(GroupMember)
                        .where(GroupMember.group_id == group_id)
                        .values(last_message_id=message_id)
                    )
                    await session.execute(
                        insert(InboxEntry), _entries(versions, "message", now, message_id, data)
                    )
                others = [user for user in versions if user != sender]
                if push_wait is not None and others:
                    mine = Pusher.user_id.in_(others)
                    await session.execute(
                        update(Pusher)
                        .where(mine, Pusher.due_at.is_(None))
                        .values(due_at=now + timedelta(seconds=push_wait))
                    )
                    await session.execute(
                        update(Pusher)
                        .where(mine, Pusher.leased_until.is_not(None))
                        .values(news=True)
                    )
        except IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        return SentMessage(message, sender_version, sorted(versions))

    async def existing_send(self, sender: str, client_msg_id: str) -> tuple[MessageRow, int] | None:
        async with self._db.read_sessions() as session:
            row = (
                await session.execute(
                    select(*_MESSAGE, Message.sender_version).where(
                        Message.sender == sender,
                        Message.client_msg_id == client_msg_id,
                        Message.group_id.is_not(None),
                    )
                )
            ).first()
        return (_message(row[:8]), row[8]) if row is not None else None

    async def message(self, message_id: int) -> MessageRow | None:
        async with self._db.read_sessions() as session:
            row = (
                await session.execute(
                    select(*_MESSAGE).where(Message.id == message_id, Message.group_id.is_not(None))
                )
            ).first()
        return _message(row) if row is not None else None

    async def mark_read(
        self, group_id: str, reader: str, up_to_seq: int, data: dict[str, Any]
    ) -> tuple[int, int, bool] | None:
        async with self._db.session() as session, session.begin():
            member = (
                await session.execute(
                    select(GroupMember.read_seq).where(
                        GroupMember.group_id == group_id, GroupMember.user_id == reader
                    )
                )
            ).first()
            if member is None:
                return None
            if member.read_seq >= up_to_seq:
                latest = await session.scalar(
                    select(User.latest_version).where(User.user_id == reader)
                )
                assert latest is not None
                return member.read_seq, latest, False
            await session.execute(
                update(GroupMember)
                .where(GroupMember.group_id == group_id, GroupMember.user_id == reader)
                .values(read_seq=up_to_seq)
            )
            versions = await _bump(session, [reader])
            await session.execute(
                insert(InboxEntry),
                _entries(versions, "read", _now(), None, orjson.dumps(data).decode()),
            )
        return up_to_seq, versions[reader], True

    async def conversations(
        self, user_id: str, before: int | None, limit: int
    ) -> list[ConversationItem]:
        # A small group's member row holds its newest message; a large group's, none (NULL).
        listed = func.coalesce(GroupMember.last_message_id, Group.last_message_id)
        stmt = (
            select(Group.title, GroupMember.read_seq, *_MESSAGE)
            .join(Group, Group.group_id == GroupMember.group_id)
            .join(Message, Message.id == listed)
            .where(GroupMember.user_id == user_id, listed > 0)
            .order_by(listed.desc())
            .limit(limit)
        )
        if before is not None:
            stmt = stmt.where(listed < before)
        async with self._db.read_sessions() as session, session.begin():
            rows = list(await session.execute(stmt))
            items = []
            for row in rows:
                unread = await session.scalar(
                    select(func.count()).where(
                        Message.group_id == row.group_id,
                        Message.seq > row.read_seq,
                        Message.sender != user_id,
                        Message.recalled_at.is_(None),
                    )
                )
                items.append(
                    ConversationItem(
                        group_id=row.group_id,
                        title=row.title,
                        read_seq=row.read_seq,
                        last_message=_message(row[2:]),
                        unread_count=unread or 0,
                    )
                )
        return items

    async def latest_version(self, user_id: str) -> int:
        async with self._db.read_sessions() as session:
            latest = await session.scalar(
                select(User.latest_version).where(User.user_id == user_id)
            )
        assert latest is not None
        return latest

    async def groups_of(self, user_id: str) -> list[tuple[str, int]]:
        async with self._db.read_sessions() as session:
            rows = await session.execute(
                select(Group.group_id, Group.latest_seq)
                .join(GroupMember, GroupMember.group_id == Group.group_id)
                .where(GroupMember.user_id == user_id)
                .order_by(Group.group_id)
            )
            return [(row[0], row[1]) for row in rows]
