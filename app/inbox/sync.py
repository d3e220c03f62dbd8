"""Send and fetch-since: the units of work behind the sync protocol (acks: app/inbox/acks.py)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import sqlalchemy.exc
from sqlalchemy import Row, insert, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.db.models import Conversation, Device, InboxEntry, Message, Pusher, User, utcnow
from app.db.replicas import Replica
from app.errors import AppError

__all__ = [
    "FetchedEntry",
    "Page",
    "SendResult",
    "bump_versions",
    "check_since",
    "device_cursor",
    "existing_send",
    "fetch_since",
    "format_time",
    "message_data",
    "render_page",
    "send_message",
]


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, whatever time zone the database session reports in."""
    # Always six digits: the same text the database's to_char(..., 'US') gives (_STAMP).
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def message_data(
    id: int,
    sender: str,
    recipient: str,
    body: str,
    client_msg_id: str | None,
    created_at: datetime,
    recalled_at: datetime | None,
) -> dict[str, Any]:
    """The `Message` object of the HTTP contract; a recalled message shows an empty body."""
    return {
        "id": id,
        "from": sender,
        "to": recipient,
        "body": "" if recalled_at is not None else body,
        "client_msg_id": client_msg_id,
        "created_at": format_time(created_at),
        "recalled_at": format_time(recalled_at) if recalled_at is not None else None,
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


async def bump_versions(session: AsyncSession, user_ids: Iterable[str]) -> dict[str, int]:
    """Take the next version of each user, holding their rows locked until commit.

    Rows are locked in user-id order so that two transactions bumping the same pair in
    opposite roles (A sends to B while B sends to A) queue instead of deadlocking. Holding
    the lock to commit is what makes a user's versions commit in order: no reader can see
    version V+1 committed while V is still in flight.
    Returns only the users that exist.
    """
    ids = sorted(set(user_ids))
    if session.get_bind().dialect.name == "postgresql":
        locked = (
            select(User.user_id)
            .where(User.user_id.in_(ids))
            .order_by(User.user_id)
            .with_for_update()
            .subquery()
        )
        stmt = (
            update(User)
            .where(User.user_id == locked.c.user_id)
            .values(latest_version=User.latest_version + 1)
            .returning(User.user_id, User.latest_version)
        )
    else:
        # SQLite has one writer at a time (BEGIN IMMEDIATE): there is no order to keep.
        stmt = (
            update(User)
            .where(User.user_id.in_(ids))
            .values(latest_version=User.latest_version + 1)
            .returning(User.user_id, User.latest_version)
        )
    rows = (await session.execute(stmt)).all()
    return {row.user_id: row.latest_version for row in rows}


@dataclass(frozen=True, slots=True)
class SendResult:
    message: dict[str, Any]
    version: int
    created: bool


async def existing_send(db: Database, sender: str, client_msg_id: str) -> SendResult | None:
    """The stored message that `sender` sent with `client_msg_id`, as its send answered."""
    async with db.statement() as conn:
        row = (
            await conn.execute(
                select(*MESSAGE_COLUMNS, Message.sender_version).where(
                    Message.sender == sender, Message.client_msg_id == client_msg_id
                )
            )
        ).first()
    if row is None:
        return None
    return SendResult(message_row_data(row), row.sender_version, created=False)


def upsert(db: Database) -> Any:
    """The dialect's INSERT, which carries ON CONFLICT."""
    return sqlite.insert if db.is_sqlite else postgresql.insert


async def send_message(
    db: Database,
    sender: str,
    recipient: str,
    body: str,
    client_msg_id: str | None,
    max_body_bytes: int,
    push_wait: float | None = None,
) -> SendResult:
    """One transaction: bump both versions, write the index row and both inbox entries, and
    with push on (`push_wait`: seconds until a push falls due, app.push.pushers.push_wait) mark the
    recipient's pushers due."""
    if len(body.encode()) > max_body_bytes:
        raise AppError(
            413, "body_too_large", f"body is larger than {max_body_bytes} bytes of UTF-8"
        )
    now = utcnow()  # SQLite only (one process on one host); PostgreSQL stamps it itself
    # The payload is serialised once, here; the message id and, on PostgreSQL, the
    # created_at are spliced in by the database.
    data = message_data(0, sender, recipient, body, client_msg_id, now, None)
    head, tail = _ID_HEAD, orjson.dumps(data).decode()[len(_ID_HEAD) + 1 :]
    try:
        write = _send_statement if not db.is_sqlite else _send_transaction
        stored = await write(db, sender, recipient, body, client_msg_id, now, head, tail, push_wait)
    except IntegrityError:
        # A retry, or the same (sender, client_msg_id) committed while we waited for the
        # sender's lock: the unique constraint decided, and the failed statement took no
        # version. Answer with the first result. (No look-up before the send: it would cost
        # every send a round trip to save a retry a short lock.)
        if client_msg_id is not None:
            found = await existing_send(db, sender, client_msg_id)
            if found is not None:
                return found
        raise
    if stored is None:
        raise AppError(404, "recipient_not_found", f"no user {recipient!r}")
    message_id, sender_version, created_at = stored
    return SendResult(
        {**data, "id": message_id, "created_at": created_at}, sender_version, created=True
    )


# Every stored message payload starts with its id: {"id":123,"from":...}.
_ID_HEAD = '{"id":'

# The database's clock as the contract's text: created_at comes from the one clock every
# host shares, so times agree with the retention cut-off and the recall window whichever
# host served the send.
_STAMP = """to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

# PostgreSQL: the whole send in one statement, hence one round trip and one implicit
# transaction (autocommit). The CTEs run in one snapshot; the UPDATE re-reads each locked
# row at its newest committed version (READ COMMITTED), so versions are bumped correctly
# even when the lock was waited for.
_SEND_SQL = (
    """
WITH stamp AS (SELECT now() AS created_at, """
    + _STAMP
    + """ AS text
), locked AS (
    -- Both parties' rows, locked in user-id order: crossing sends queue, never deadlock.
    -- Held to commit, so a user's versions commit in the order they were taken.
    SELECT user_id FROM users WHERE user_id IN (%(sender)s, %(recipient)s)
    ORDER BY user_id FOR UPDATE
), bumped AS (
    -- Only when every party exists: a send to nobody must not cost the sender a version.
    UPDATE users SET latest_version = users.latest_version + 1
    FROM locked
    WHERE users.user_id = locked.user_id AND (SELECT count(*) FROM locked) = %(parties)s
    RETURNING users.user_id, users.latest_version
), message AS (
    INSERT INTO messages (sender, recipient, pair_lo, pair_hi, body, client_msg_id,
                          sender_version, recipient_version, created_at)
    SELECT %(sender)s, %(recipient)s, %(pair_lo)s, %(pair_hi)s, %(body)s, %(client_msg_id)s,
           s.latest_version, r.latest_version, stamp.created_at
    FROM bumped AS s, bumped AS r, stamp
    WHERE s.user_id = %(sender)s AND r.user_id = %(recipient)s
    RETURNING id, sender_version
), entries AS (
    -- One entry per party; the sender's is how the sender's other devices learn of it.
    INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
    SELECT bumped.user_id, bumped.latest_version, 'message', stamp.created_at, message.id,
           %(head)s || message.id || %(tail_a)s || stamp.text || %(tail_b)s
    FROM bumped, message, stamp
), conversation AS (
    INSERT INTO conversations (user_id, peer, last_message_id)
    SELECT pairs.user_id, pairs.peer, message.id
    FROM message,
         -- UNION, not UNION ALL: a note to oneself is one conversation row.
         (SELECT CAST(%(sender)s AS VARCHAR) AS user_id, CAST(%(recipient)s AS VARCHAR) AS peer
          UNION SELECT %(recipient)s, %(sender)s) AS pairs
    ON CONFLICT (user_id, peer) DO UPDATE SET last_message_id = excluded.last_message_id
)
SELECT id, sender_version, stamp.text FROM message, stamp
"""
)

# With push on: the recipient's pushers (never the sender's own: %(pushed)s is NULL for a
# note to oneself) fall due push_wait after the first message of a delay window; one due
# already keeps its time. During a push in flight (leased) `news` tells the worker to look
# again when it settles (app.push.leases.settle). An index probe when there is no pusher.
_MARK_PUSHERS = """
), marked AS (
    UPDATE pushers
    SET due_at = coalesce(pushers.due_at, stamp.created_at + %(push_wait)s * interval '1 second'),
        news = pushers.news OR pushers.leased_until IS NOT NULL
    FROM message, stamp
    WHERE pushers.user_id = %(pushed)s
      AND (pushers.due_at IS NULL OR pushers.leased_until IS NOT NULL)
)
SELECT id"""
_SEND_PUSH_SQL = _SEND_SQL.replace("\n)\nSELECT id", _MARK_PUSHERS, 1)
assert _SEND_PUSH_SQL != _SEND_SQL


async def _send_statement(
    db: Database,
    sender: str,
    recipient: str,
    body: str,
    client_msg_id: str | None,
    now: datetime,
    head: str,
    tail: str,
    push_wait: float | None,
) -> tuple[int, int, str] | None:
    lo, hi = sorted((sender, recipient))
    # The payload's created_at is the database's: cut the text around the value.
    key = '"created_at":"'
    cut = tail.rindex(key) + len(key)  # a body's quotes are escaped: only the key matches
    params: dict[str, object] = {
        "sender": sender,
        "recipient": recipient,
        "parties": 1 if sender == recipient else 2,
        "pair_lo": lo,
        "pair_hi": hi,
        "body": body,
        "client_msg_id": client_msg_id,
        "head": head,
        "tail_a": tail[:cut],
        "tail_b": tail[tail.index('"', cut) :],
    }
    sql = _SEND_SQL
    if push_wait is not None:
        sql = _SEND_PUSH_SQL
        params["push_wait"] = push_wait
        params["pushed"] = recipient if recipient != sender else None
    async with db.driver() as driver:
        try:
            cursor = await driver.execute(sql, params)
        except psycopg.errors.UniqueViolation as exc:
            raise IntegrityError(sql, params, exc) from exc
        row = await cursor.fetchone()
    return None if row is None else (row[0], row[1], row[2])


async def _send_transaction(
    db: Database,
    sender: str,
    recipient: str,
    body: str,
    client_msg_id: str | None,
    now: datetime,
    head: str,
    tail: str,
    push_wait: float | None,
) -> tuple[int, int, str] | None:
    """The same unit of work as _SEND_SQL, statement by statement (SQLite)."""
    async with db.session() as session, session.begin() as transaction:
        versions = await bump_versions(session, (sender, recipient))
        if recipient not in versions or sender not in versions:
            await transaction.rollback()  # give the sender's version back
            return None
        lo, hi = sorted((sender, recipient))
        message_id = await session.scalar(
            insert(Message)
            .values(
                sender=sender,
                recipient=recipient,
                pair_lo=lo,
                pair_hi=hi,
                body=body,
                client_msg_id=client_msg_id,
                sender_version=versions[sender],
                recipient_version=versions[recipient],
                created_at=now,
            )
            .returning(Message.id)
        )
        assert message_id is not None
        payload = f"{head}{message_id}{tail}"
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
        peers = {(sender, recipient), (recipient, sender)}
        stmt = upsert(db)(Conversation).values(
            [{"user_id": u, "peer": p, "last_message_id": message_id} for u, p in peers]
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[Conversation.user_id, Conversation.peer],
                set_={"last_message_id": stmt.excluded.last_message_id},
            )
        )
        if push_wait is not None and recipient != sender:
            # _MARK_PUSHERS in two statements (this transaction holds the write lock).
            mine = Pusher.user_id == recipient
            await session.execute(
                update(Pusher)
                .where(mine, Pusher.due_at.is_(None))
                .values(due_at=now + timedelta(seconds=push_wait))
            )
            await session.execute(
                update(Pusher).where(mine, Pusher.leased_until.is_not(None)).values(news=True)
            )
    return message_id, versions[sender], format_time(now)


@dataclass(frozen=True, slots=True)
class FetchedEntry:
    version: int
    kind: str
    created_at: datetime
    data: str  # the entry's JSON payload, as stored
    id: str  # the entry id of the contract (see entry_id_text)


def entry_id_text(value: uuid.UUID | str) -> str:
    """An inbox row's entry id as clients see it: 32 lowercase hex digits. The drivers hand
    a UUID (PostgreSQL's uuid, SQLAlchemy's Uuid) or, on raw SQLite, the stored hex."""
    return value.hex if isinstance(value, uuid.UUID) else value.replace("-", "").lower()


@dataclass(frozen=True, slots=True)
class Page:
    entries: Sequence[FetchedEntry]
    next_since: int
    latest_version: int
    has_more: bool
    history_fallback: bool


async def fetch_since(
    db: Database,
    user_id: str,
    since: int,
    limit: int,
    *,
    since_id: str | None = None,
    primary: bool = False,
) -> Page:
    """Everything newer than `since`, oldest first, at most `limit` entries.

    The floor, the latest version, the entry at `since` (checked against `since_id`, see
    check_since) and the entries are read in one snapshot: otherwise a retention run
    committing between the reads could make the page skip entries.
    `primary`: read the primary even when a replica serves. A woken long-poll does: it was
    woken by a commit on the primary, which a replica may not have replayed yet; asking it
    first would add its replay lag, or a round trip, to every wake-up.
    """
    if not db.is_sqlite:
        replica = None if primary else db.replicas.pick()
        if replica is not None:
            written = db.replicas.written(user_id)
            page = await _fetch_from_replica(replica, user_id, since, limit, since_id, written)
            if page is not None:
                return page
        page = await _fetch_in_one_statement(db, user_id, since, limit, since_id)
        if page is not None:
            return page
    async with db.read_sessions() as session, session.begin():
        user = (
            await session.execute(
                select(User.latest_version, User.floor_version).where(User.user_id == user_id)
            )
        ).one()
        latest, floor = user.latest_version, user.floor_version
        stored_id = None
        if since_id is not None and floor < since <= latest:
            stored_id = await session.scalar(
                select(InboxEntry.entry_id).where(
                    InboxEntry.user_id == user_id, InboxEntry.version == since
                )
            )
        check_since(since, since_id, latest, floor, stored_id)
        entries: list[FetchedEntry] = []
        fallback = since < floor
        position = since
        if fallback:
            entries = await _from_history(session, user_id, since, floor, limit)
            if len(entries) < limit:
                # The pruned range is exhausted; what it held beyond these were operation
                # entries, whose effects are already on the message rows.
                position = floor
        if len(entries) < limit and position >= floor:
            rows = await session.execute(
                select(
                    InboxEntry.version,
                    InboxEntry.kind,
                    InboxEntry.created_at,
                    InboxEntry.data,
                    InboxEntry.entry_id,
                )
                .where(InboxEntry.user_id == user_id, InboxEntry.version > position)
                .order_by(InboxEntry.version)
                .limit(limit - len(entries))
            )
            entries.extend(FetchedEntry(v, k, c, d, entry_id_text(i)) for v, k, c, d, i in rows)
    next_since = max(entries[-1].version if entries else position, position)
    return Page(entries, next_since, latest, next_since < latest, fallback)


def render_page(page: Page) -> bytes:
    """Serialise a page without decoding the stored payloads: they are JSON already."""
    return orjson.dumps(
        {
            "entries": [
                {
                    "version": entry.version,
                    "id": entry.id,
                    "kind": entry.kind,
                    "created_at": format_time(entry.created_at),
                    "data": orjson.Fragment(entry.data),
                }
                for entry in page.entries
            ],
            "next_since": page.next_since,
            "latest_version": page.latest_version,
            "has_more": page.has_more,
            "history_fallback": page.history_fallback,
        }
    )


def check_since(
    since: int,
    since_id: str | None,
    latest: int,
    floor: int,
    stored_id: uuid.UUID | str | None,
) -> None:
    """Whether the client's cursor still names the server's history; every page read
    calls this with what it read in the page's snapshot.

    409 since_ahead: the user's history ends before `since` (a restore, a promoted replica
    that missed commits). 409 history_rewritten: the entry the client saw at `since` (its
    id is `since_id`) is not the one stored there now: the versions it has seen were handed
    to other changes. At or below the floor the entry is gone, so there is nothing to
    compare (`stored_id` None): the check is skipped.
    """
    if since > latest:
        raise AppError(
            409,
            "since_ahead",
            f"since={since} is ahead of the latest version {latest}",
            latest_version=latest,
        )
    if (
        since_id is not None
        and since > floor
        and stored_id is not None
        and entry_id_text(stored_id) != since_id
    ):
        raise AppError(
            409,
            "history_rewritten",
            f"the entry at version {since} is not the one with id {since_id}: "
            "the history was rewritten (a restore or a failover); sync again from 0",
            latest_version=latest,
        )


# The user's counters and a page of entries, in one statement and one snapshot. The outer
# join gives one row with no entry columns when nothing is newer than `since`.
_PAGE_SQL = """
SELECT u.latest_version, u.floor_version, NULL AS since_entry,
       e.version, e.kind, e.created_at, e.data, e.entry_id
FROM users AS u
LEFT JOIN LATERAL (
    SELECT version, kind, created_at, data, entry_id FROM inbox
    WHERE inbox.user_id = u.user_id AND inbox.version > %(since)s
    ORDER BY version
    LIMIT %(limit)s
) AS e ON true
WHERE u.user_id = %(user_id)s
"""
# With `since_id`: also the id of the entry at `since`, in the same snapshot (one more
# primary-key probe, only for clients that send it).
_CHECKED_PAGE_SQL = _PAGE_SQL.replace(
    "NULL AS since_entry",
    "(SELECT entry_id FROM inbox AS s\n"
    "        WHERE s.user_id = u.user_id AND s.version = %(since)s) AS since_entry",
    1,
)
assert _CHECKED_PAGE_SQL != _PAGE_SQL


def _page_statement(since_id: str | None) -> str:
    return _PAGE_SQL if since_id is None else _CHECKED_PAGE_SQL


def _entries(rows: Sequence[Any]) -> list[FetchedEntry]:
    return [
        FetchedEntry(v, k, c, d, entry_id_text(i))
        for _, _, _, v, k, c, d, i in rows
        if v is not None
    ]


async def _fetch_in_one_statement(
    db: Database, user_id: str, since: int, limit: int, since_id: str | None
) -> Page | None:
    """The common case on PostgreSQL: the user's counters and the entries in one statement
    (one snapshot, one round trip), on the driver: SQLAlchemy's row objects made a page of
    1000 entries slower than the two-statement transaction (5.8-9.4 against 4.9 ms).
    None when `since` is below the floor: the caller then takes the fallback path."""
    params = {"user_id": user_id, "since": since, "limit": limit}
    async with db.driver() as driver:
        cursor = await driver.execute(_page_statement(since_id), params)
        rows = await cursor.fetchall()
    latest, floor = rows[0][0], rows[0][1]
    check_since(since, since_id, latest, floor, rows[0][2])
    if since < floor:
        return None
    found = _entries(rows)
    next_since = found[-1].version if found else since
    return Page(found, next_since, latest, next_since < latest, False)


async def _fetch_from_replica(
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
            rows = await cursor.fetchall()
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


async def _from_history(
    session: AsyncSession, user_id: str, since: int, floor: int, limit: int
) -> list[FetchedEntry]:
    """The user's messages with a version in (since, floor], from the index table."""
    as_sender = select(*MESSAGE_COLUMNS, Message.sender_version.label("version")).where(
        Message.sender == user_id,
        Message.sender_version > since,
        Message.sender_version <= floor,
    )
    as_recipient = select(*MESSAGE_COLUMNS, Message.recipient_version.label("version")).where(
        Message.recipient == user_id,
        Message.sender != user_id,  # a note to oneself is already in the first half
        Message.recipient_version > since,
        Message.recipient_version <= floor,
    )
    both = union_all(as_sender, as_recipient).subquery()
    rows = await session.execute(select(both).order_by(both.c.version).limit(limit))
    return [_history_entry(row) for row in rows]


def _history_entry(row: Row[Any]) -> FetchedEntry:
    data = orjson.dumps(message_row_data(row)).decode()
    return FetchedEntry(
        row.version, "message", row.created_at, data, history_entry_id(row, row.version)
    )


def history_entry_id(row: Any, version: int) -> str:
    """The id of an entry served from the index table below the floor.

    Its inbox row is gone, and with it the id drawn for it: this one is derived from what
    the message row holds for good (the same on every re-read, recalled or not), and starts
    with `h`, which no drawn id (hex) does. A restore or a failover that gives the message
    id and version to another message gives it another sender, recipient or creation time
    to the microsecond, hence another id. The check of `since_id` never compares against
    it (it is skipped at or below the floor); should a restore lower the floor under a
    cursor that stands on such an entry, the inbox entry there has a drawn id, so the
    client is sent back to 0: a 409 that may be needless, never one that is missed.
    """
    key = "\x1f".join(
        (
            str(row.id),
            str(version),
            row.sender,
            row.recipient,
            format_time(row.created_at),
            row.client_msg_id or "",
        )
    )
    return "h" + hashlib.sha256(key.encode()).hexdigest()[:31]


async def device_cursor(db: Database, device_id: str) -> int:
    """Where a sync without `since` resumes: the device's ack cursor."""
    async with db.statement() as conn:
        cursor = await conn.scalar(
            select(Device.acked_version).where(Device.device_id == device_id)
        )
    if cursor is None:
        raise AppError(401, "unauthorized", "invalid or revoked token")
    return cursor
