"""A durable store in one SQLite file (stdlib sqlite3), private to the user (mode 0600)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from msgsync_client.changes import Applied, Change, plan_events, plan_page
from msgsync_client.models import (
    EventsPage,
    GroupState,
    Message,
    OutboxItem,
    OutboxState,
    Page,
    ReadReceipt,
    Session,
)

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, sender TEXT NOT NULL, recipient TEXT, peer TEXT,
    body TEXT NOT NULL, client_msg_id TEXT, created_at TEXT NOT NULL, recalled_at TEXT,
    group_id TEXT, seq INTEGER
);
CREATE INDEX IF NOT EXISTS messages_peer ON messages (peer, id);
CREATE INDEX IF NOT EXISTS messages_group ON messages (group_id, id);
CREATE TABLE IF NOT EXISTS reads (
    reader TEXT NOT NULL, peer TEXT NOT NULL, up_to_message_id INTEGER NOT NULL,
    PRIMARY KEY (reader, peer)
);
CREATE TABLE IF NOT EXISTS groups (
    group_id TEXT PRIMARY KEY, title TEXT NOT NULL, owner TEXT, role TEXT,
    seq INTEGER NOT NULL, news_seq INTEGER NOT NULL, read_seq INTEGER NOT NULL,
    stale INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    group_id TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE TABLE IF NOT EXISTS applied (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, version INTEGER NOT NULL, kind TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, client_msg_id TEXT NOT NULL UNIQUE,
    recipient TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL,
    message_id INTEGER, error TEXT, group_id TEXT
);
"""
# The file's layout version (PRAGMA user_version). 1: groups. A file of version 0 (written
# before groups) is upgraded in place when opened.
_VERSION = 1
_UPGRADE_FROM_0 = """
ALTER TABLE messages RENAME TO messages_v0;
DROP INDEX IF EXISTS messages_peer;
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, sender TEXT NOT NULL, recipient TEXT, peer TEXT,
    body TEXT NOT NULL, client_msg_id TEXT, created_at TEXT NOT NULL, recalled_at TEXT,
    group_id TEXT, seq INTEGER
);
INSERT INTO messages (id, sender, recipient, peer, body, client_msg_id, created_at, recalled_at)
    SELECT id, sender, recipient, peer, body, client_msg_id, created_at, recalled_at
    FROM messages_v0;
DROP TABLE messages_v0;
ALTER TABLE outbox ADD COLUMN group_id TEXT;
"""
_MESSAGE_COLUMNS = (
    "id, sender, recipient, body, client_msg_id, created_at, recalled_at, group_id, seq"
)
_STREAM_TABLES = ("messages", "reads", "groups", "group_members", "applied")


class SqliteStore:
    """One file per device session. Every change is one SQLite transaction; the file is in
    WAL mode with synchronous=FULL, so a committed page survives a power cut, which is what
    lets the SDK ack it to the server (an acked entry may be pruned there)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._acked = 0
        # The client applies pages in a worker thread while the app may enqueue a send:
        # one connection, so one lock keeps each transaction whole.
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Create the file 0600 before SQLite opens it: it holds the access token and the
        # user's messages. SQLite gives its -wal/-shm files the database file's mode.
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE in _transaction).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        # A logout deletes a user's messages from a file that may stay on a shared computer:
        # overwrite what is deleted instead of leaving it in free pages.
        self._db.execute("PRAGMA secure_delete=ON")
        with self._transaction() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            existing = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
            ).fetchone()
            if existing and version < 1:
                _run(db, _UPGRADE_FROM_0)
            _run(db, _SCHEMA)
            db.execute(f"PRAGMA user_version = {_VERSION}")  # a constant

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock at once: two processes on one store (a CLI `send`
        # beside a running `tail`) then queue instead of failing half-way.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _get(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM state WHERE key = ?", (key,))
        return None if not rows else str(rows[0][0])

    @staticmethod
    def _put(db: sqlite3.Connection, key: str, value: str | None) -> None:
        if value is None:
            db.execute("DELETE FROM state WHERE key = ?", (key,))
        else:
            db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    def session(self) -> Session | None:
        values = [self._get(k) for k in ("server", "user_id", "device_id", "access_token")]
        if any(v is None for v in values):
            return None
        server, user_id, device_id, token = (str(v) for v in values)
        return Session(server, user_id, device_id, token)

    def set_session(self, session: Session | None) -> None:
        with self._transaction() as db:
            for key in ("server", "user_id", "device_id", "access_token"):
                self._put(db, key, None if session is None else str(getattr(session, key)))

    def cursor(self) -> int:
        return int(self._get("cursor") or 0)

    def cursor_id(self) -> str | None:
        return self._get("cursor_id")

    def acked(self) -> int:
        return max(int(self._get("acked") or 0), self._acked)

    def set_acked(self, version: int) -> None:
        # Informational only (acks are cumulative and idempotent, a lost value costs nothing):
        # kept in memory and written with the next page or at close, not in a transaction
        # of its own, which would cost an fsync per ack.
        self._acked = max(self._acked, version)

    def gaps(self) -> int:
        return int(self._get("gaps") or 0)

    def apply_page(self, page: Page) -> Applied:
        # Planned inside the transaction: another process on this file (a CLI `send`
        # beside a running `tail`) cannot change what the plan read before it is written.
        with self._transaction() as db:
            change, applied = plan_page(self, self._get("user_id") or "", page)
            self._write(db, change, page)
        return applied

    def apply_events(self, group_id: str, page: EventsPage) -> Applied:
        with self._transaction() as db:
            change, applied = plan_events(self, self._get("user_id") or "", group_id, page)
            self._write(db, change)
        return applied

    def commit(self, change: Change) -> None:
        with self._transaction() as db:
            self._write(db, change)

    def _write(self, db: sqlite3.Connection, change: Change, page: Page | None = None) -> None:
        for group_id in change.dropped_groups:
            for table in ("messages", "group_members", "groups"):
                db.execute(f"DELETE FROM {table} WHERE group_id = ?", (group_id,))  # fixed names
        user = self._get("user_id") or ""
        db.executemany(
            "INSERT OR REPLACE INTO messages (peer, " + _MESSAGE_COLUMNS + ")"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    m.peer_of(user),
                    m.id,
                    m.sender,
                    m.recipient,
                    m.body,
                    m.client_msg_id,
                    m.created_at,
                    m.recalled_at,
                    m.group_id,
                    m.seq,
                )
                for m in change.messages.values()
            ],
        )
        # Recalls after the messages, which keeps the result of applying in version order:
        # a recall always comes after its message; receipts only ever move forward (max).
        db.executemany(
            "UPDATE messages SET body = '', recalled_at = ? WHERE id = ?",
            [(r.recalled_at, r.message_id) for r in change.recalls],
        )
        db.executemany(
            "INSERT INTO reads VALUES (?, ?, ?) ON CONFLICT (reader, peer) DO UPDATE"
            " SET up_to_message_id = max(up_to_message_id, excluded.up_to_message_id)",
            [(r.reader, r.peer, r.up_to_message_id) for r in change.reads.values()],
        )
        db.executemany(
            "INSERT OR REPLACE INTO groups VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (g.group_id, g.title, g.owner, g.role, g.seq, g.news_seq, g.read_seq, g.stale)
                for g in change.groups.values()
            ],
        )
        for group_id in change.members_changed:
            db.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
            db.executemany(
                "INSERT INTO group_members VALUES (?, ?, ?)",
                [(group_id, u, r) for u, r in change.groups[group_id].members.items()],
            )
        db.executemany("INSERT INTO applied (version, kind) VALUES (?, ?)", change.applied)
        self._put(db, "acked", str(self.acked()))
        if page is not None:
            self._before_cursor(page)
        if change.cursor is not None:
            self._put(db, "cursor", str(change.cursor))
            self._put(db, "cursor_id", change.cursor_id)
        if change.gap:
            self._put(db, "gaps", str(self.gaps() + 1))

    def _before_cursor(self, page: Page) -> None:
        """Called inside apply_page's transaction, after the entries and before the cursor:
        the point a crash must not split (the conformance adapter kills itself here)."""

    def reset_stream(self) -> None:
        with self._transaction() as db:
            for table in _STREAM_TABLES:
                db.execute(f"DELETE FROM {table}")  # fixed table names
            self._put(db, "cursor", "0")
            self._put(db, "cursor_id", None)
            self._put(db, "acked", "0")
            self._acked = 0

    def clear(self) -> None:
        with self._transaction() as db:
            for table in ("state", *_STREAM_TABLES, "outbox"):
                db.execute(f"DELETE FROM {table}")  # fixed table names
            self._acked = 0
        # The WAL still holds the pages as they were before the delete: copy the cleared
        # pages into the database and empty the WAL (best effort: a reader in another
        # process, such as a running `tail`, may hold it; its next checkpoint does it).
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def add_outbox(self, item: OutboxItem) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO outbox"
                " (client_msg_id, recipient, body, state, message_id, error, group_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    item.client_msg_id,
                    item.to,
                    item.body,
                    item.state.value,
                    item.message_id,
                    item.error,
                    item.group_id,
                ),
            )

    def update_outbox(self, item: OutboxItem) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET state = ?, message_id = ?, error = ? WHERE client_msg_id = ?",
                (item.state.value, item.message_id, item.error, item.client_msg_id),
            )

    def outbox(self) -> list[OutboxItem]:
        rows = self._rows(
            "SELECT client_msg_id, recipient, body, state, message_id, error, group_id"
            " FROM outbox ORDER BY seq"
        )
        return [OutboxItem(r[0], r[1], r[2], OutboxState(r[3]), r[4], r[5], r[6]) for r in rows]

    def messages(self, peer: str | None = None, group_id: str | None = None) -> list[Message]:
        where, params = [], []
        if peer is not None:
            where.append("peer = ?")
            params.append(peer)
        if group_id is not None:
            where.append("group_id = ?")
            params.append(group_id)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages{condition} ORDER BY id"
        return [Message(*row) for row in self._rows(sql, tuple(params))]

    def group(self, group_id: str) -> GroupState | None:
        found = self._groups("WHERE group_id = ?", (group_id,))
        return found[0] if found else None

    def groups(self) -> list[GroupState]:
        return self._groups("", ())

    def groups_to_sync(self) -> list[GroupState]:
        return self._groups(
            "WHERE group_id IN (SELECT group_id FROM groups WHERE news_seq > seq OR stale)", ()
        )

    def _groups(self, where: str, params: tuple[object, ...]) -> list[GroupState]:
        with self._lock:
            rows = self._rows(
                "SELECT group_id, title, owner, role, seq, news_seq, read_seq, stale"
                f" FROM groups {where} ORDER BY group_id",
                params,
            )
            members: dict[str, dict[str, str]] = {}
            for group_id, user_id, role in self._rows(
                f"SELECT group_id, user_id, role FROM group_members {where} ORDER BY user_id",
                params,
            ):
                members.setdefault(group_id, {})[user_id] = role
        return [
            GroupState(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), members.get(r[0], {}))
            for r in rows
        ]

    def reads(self) -> list[ReadReceipt]:
        rows = self._rows("SELECT reader, peer, up_to_message_id FROM reads ORDER BY reader, peer")
        return [ReadReceipt(*row) for row in rows]

    def applied(self) -> list[tuple[int, str]]:
        rows = self._rows("SELECT version, kind FROM applied ORDER BY seq")
        return [(int(v), str(k)) for v, k in rows]

    def close(self) -> None:
        with self._lock:
            if self._acked > int(self._get("acked") or 0):
                with self._transaction() as db:
                    self._put(db, "acked", str(self._acked))
            self._db.close()


def _run(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
