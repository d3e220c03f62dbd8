"""ORM tables: users (the version counter), devices, messages, inbox, conversations, groups."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base",
    "Conversation",
    "Device",
    "Group",
    "GroupEvent",
    "GroupMember",
    "InboxEntry",
    "Message",
    "Pusher",
    "ThrottleCounter",
    "User",
    "utcnow",
]

# The schema is declared once, for both databases. Its per-database spellings (BigId's
# INTEGER, new_entry_id's SQL, the partial indexes' sqlite_where) are read by SQLAlchemy and
# Alembic when they compile for a database; the service never asks which one it runs on
# here. They stay beside the tables they spell: in app.store.sqlite they would make the
# models (and Alembic's env, the drift test) import the store, whose every implementation
# imports the models.

# An auto-incrementing 64-bit key: SQLite only auto-increments a column declared INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out. Bound in UTC for both databases: PostgreSQL keeps the
    instant, SQLite's DATETIME keeps the UTC wall clock (its text drops the zone), so the
    zone is put back on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class new_entry_id(FunctionElement[Any]):
    """A fresh random 128-bit entry id, drawn by the database for each row it inserts, so
    that every statement writing inbox entries gets one without naming the column."""

    inherit_cache = True


@compiles(new_entry_id, "postgresql")
def _new_entry_id_postgresql(element: new_entry_id, compiler: Any, **kw: Any) -> str:
    return "gen_random_uuid()"


@compiles(new_entry_id, "sqlite")
def _new_entry_id_sqlite(element: new_entry_id, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy's Uuid is CHAR(32) of hex on SQLite.
    return "(lower(hex(randomblob(16))))"


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class User(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    # The version service: every change that concerns the user takes latest_version + 1
    # while holding this row's lock, so a user's versions are gap-free and commit in order.
    latest_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Retention cut-off: every inbox entry at or below it has been deleted.
    floor_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Device(Base):
    __tablename__ = "devices"

    device_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), index=True
    )
    # SHA-256 of the bearer token: tokens are random 256-bit values, so a fast hash suffices
    # and a stolen table yields no usable token.
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    acked_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Message(Base):
    """The index table: kept forever, the source of history and of the sync fallback.

    A direct message has a recipient and a pair; a group message has neither (NULL) but a
    group_id and the seq of its event, so that message ids stay one sequence (recall finds
    either kind) and every direct path, keyed by recipient or pair, never sees a group's.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("sender", "client_msg_id"),
        # History of one conversation, newest first (keyset on id).
        Index(None, "pair_lo", "pair_hi", "id"),
        # Sync fallback: a user's messages by that user's version.
        Index(None, "sender", "sender_version"),
        Index(None, "recipient", "recipient_version"),
        # A group's messages by seq: unread counts above a member's read cursor. Group
        # messages only: every reader names a group, and a direct send (group_id NULL)
        # would otherwise add an entry no one reads.
        Index(
            None,
            "group_id",
            "seq",
            postgresql_where=text("group_id IS NOT NULL"),
            sqlite_where=text("group_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sender: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"))
    recipient: Mapped[str | None] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"))
    # The conversation key of a direct message: the two user ids in sorted order.
    pair_lo: Mapped[str | None] = mapped_column(String(64))
    pair_hi: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    client_msg_id: Mapped[str | None] = mapped_column(String(128))
    sender_version: Mapped[int] = mapped_column(BigInteger)
    recipient_version: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recalled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    group_id: Mapped[str | None] = mapped_column(String(64))
    seq: Mapped[int | None] = mapped_column(BigInteger)


class InboxEntry(Base):
    """The offline store: one row per (user, version), payload denormalised as JSON text."""

    __tablename__ = "inbox"
    __table_args__ = (
        # Age retention scans by time.
        Index(None, "created_at"),
    )

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[str] = mapped_column(Text)
    # Unique to this entry write (the sync contract's entry `id`): when a restore or the
    # promotion of a replica that missed commits hands (user, version) to another change,
    # the new row has another id, which is how GET /sync?since_id= tells the client.
    entry_id: Mapped[uuid.UUID] = mapped_column(Uuid(), server_default=new_entry_id())


class Conversation(Base):
    """A direct conversation: one row per pair of users, shared by both.

    A send writes only last_message_id, one row for both parties; each party's read cursor
    is a column of its own, written only by that party's mark-read. A user's conversations
    are the rows where the user is pair_lo and those where the user is pair_hi, each range
    by newest message from its own index. A note to oneself has pair_lo = pair_hi.
    """

    __tablename__ = "conversations"
    __table_args__ = (
        Index(None, "pair_lo", "last_message_id"),
        Index(None, "pair_hi", "last_message_id"),
    )

    # The two user ids in sorted order (code point order), as messages.pair_lo/pair_hi.
    pair_lo: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    )
    pair_hi: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    )
    last_message_id: Mapped[int] = mapped_column(BigInteger)
    # The highest message id pair_lo (read_lo) and pair_hi (read_hi) has read in this
    # conversation; neither moves back. A note to oneself uses read_lo.
    read_lo: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    read_hi: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    @classmethod
    def cursor_of(cls, reader: str, peer: str) -> Any:
        """The reader's read cursor column in the conversation with peer."""
        return cls.read_lo if reader <= peer else cls.read_hi

    @classmethod
    def of_pair(cls, a: str, b: str) -> Any:
        """The condition selecting the conversation of users a and b."""
        lo, hi = sorted((a, b))
        return (cls.pair_lo == lo) & (cls.pair_hi == hi)


class Group(Base):
    """A group conversation; its row is the group's lock and its `seq` counter.

    Every change of a group takes latest_seq + 1 while holding this row's lock, so a group's
    seqs are gap-free and commit in order, as a user's versions are under the user's row.
    """

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("creator", "client_group_id"),)

    group_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str | None] = mapped_column(String(64))
    creator: Mapped[str] = mapped_column(String(64))
    client_group_id: Mapped[str | None] = mapped_column(String(128))
    latest_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    member_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # member_count > MSGSYNC_GROUP_FANOUT_LIMIT: events are read from the log, members
    # learn of them through coalesced group_news entries (kept by every membership change).
    large: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The newest message: orders groups among conversations (message ids are one sequence).
    last_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GroupMember(Base):
    """A member of a group; the row goes when the member leaves or is removed."""

    __tablename__ = "group_members"
    __table_args__ = (
        # A user's groups (conversation list, sync fallback), by newest message: the list's
        # first page reads a few index entries however many groups the user is in.
        Index(None, "user_id", "last_message_id"),
        # An event of a large group finds the members who hold no uncovered news without
        # reading the others (a group may have 100,000 members).
        Index(
            "ix_group_members_news_pending",
            "group_id",
            "user_id",
            postgresql_where=text("news_seq IS NULL"),
            sqlite_where=text("news_seq IS NULL"),
        ),
    )

    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.group_id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))
    # The seq of the event that added the member: the log is shown from there on.
    joined_seq: Mapped[int] = mapped_column(BigInteger)
    # The member's read cursor (a seq); never moves back.
    read_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The group's newest message (groups.last_message_id, 0 before the first), kept on the
    # member's row so that a user's groups are ordered by an index: written with the
    # member's entry when a message is fanned out, as a direct send writes both
    # conversation rows. NULL in a large group, whose sends write no member row: the
    # conversation list reads those groups' own rows.
    last_message_id: Mapped[int | None] = mapped_column(BigInteger, default=0, server_default="0")
    # Large groups: the seq at which this member's group_news entry was written, while no
    # read of the log has covered it (NULL: none uncovered, the next event writes one).
    news_seq: Mapped[int | None] = mapped_column(BigInteger)


class GroupEvent(Base):
    """The group log: every event of every group, kept forever, keyed by (group, seq)."""

    __tablename__ = "group_events"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.group_id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[str] = mapped_column(Text)  # the event's `data` object, as JSON text


class Pusher(Base):
    """A device's registration with a push gateway, and how far pushing it has got.

    The row goes with its device (ON DELETE CASCADE): logout, device removal and idle-device
    expiry all remove pushers without knowing of them.
    """

    __tablename__ = "pushers"
    __table_args__ = (
        # The sync flush and logout find a device's pushers; a send its recipient's.
        Index(None, "device_id"),
        Index(None, "user_id"),
        # The push worker leases the due ones, oldest first (app.push.leases.lease_and_read).
        Index(
            None,
            "due_at",
            postgresql_where=text("due_at IS NOT NULL"),
            sqlite_where=text("due_at IS NOT NULL"),
        ),
    )

    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pushkey: Mapped[str] = mapped_column(String(512), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(64))
    gateway_url: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    data: Mapped[str] = mapped_column(Text)  # the client's object, as JSON text
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Every version up to pushed_version is settled: pushed, or found to need no push.
    # Advanced only after the gateway accepted, so a crash repeats at most one push.
    pushed_version: Mapped[int] = mapped_column(BigInteger)
    # How far the device has synced (flushed from the processes' memory, app.push_seen).
    synced_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # When the pending push is due: set by the send of the first message of a delay window
    # (app.inbox.sync), or by the worker for a retry. NULL: nothing to push.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A message arrived while a push was in flight (leased): settling it must not clear
    # due_at, the worker looks again at once.
    news: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A process sending this push holds the lease until then; an expired lease (the process
    # died mid-request) lets another process repeat the one push in flight.
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ThrottleCounter(Base):
    """An attempt counter of app.accounts.throttle (logins, registrations, re-entered
    passwords), kept in the database so that every process of every host counts against the
    same limit."""

    __tablename__ = "throttle_counters"
    # Expired counters are deleted now and then, by time.
    __table_args__ = (Index(None, "expires_at"),)

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    # Seconds since the epoch on the database's clock (a plain number on every backend):
    # the next attempt is refused before retry_at (0: no delay yet); the row is forgotten
    # at expires_at.
    retry_at: Mapped[float] = mapped_column(Double, default=0.0, server_default="0")
    expires_at: Mapped[float] = mapped_column(Double)
