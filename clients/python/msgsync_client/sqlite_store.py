"""A durable store in one SQLite file (stdlib sqlite3), private to the user (mode 0600)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from msgsync_client.models import Message, OutboxItem, OutboxState, Page, ReadReceipt, Session
from msgsync_client.store import Applied, read_of, recall_of

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, sender TEXT NOT NULL, recipient TEXT NOT NULL, peer TEXT NOT NULL,
    body TEXT NOT NULL, client_msg_id TEXT, created_at TEXT NOT NULL, recalled_at TEXT
);
CREATE INDEX IF NOT EXISTS messages_peer ON messages (peer, id);
CREATE TABLE IF NOT EXISTS reads (
    reader TEXT NOT NULL, peer TEXT NOT NULL, up_to_message_id INTEGER NOT NULL,
    PRIMARY KEY (reader, peer)
);
CREATE TABLE IF NOT EXISTS applied (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, version INTEGER NOT NULL, kind TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, client_msg_id TEXT NOT NULL UNIQUE,
    recipient TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL,
    message_id INTEGER, error TEXT
);
"""


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
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)

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
        applied = Applied()
        with self._transaction() as db:
            cursor = before = self.cursor()
            user = self._get("user_id") or ""
            log: list[tuple[int, str]] = []
            for entry in page.entries:
                if entry.version <= cursor:
                    continue  # each version once, even if a page repeats one
                log.append((entry.version, entry.kind))
                if entry.kind == "message":
                    applied.messages.append(Message.from_json(entry.data))
                elif entry.kind == "recall":
                    applied.recalls.append(recall_of(entry))
                elif entry.kind == "read":
                    applied.reads.append(read_of(entry))
                cursor = entry.version
            applied.count = len(log)
            # Batched by kind, which keeps the result of applying in version order: a recall
            # always comes after its message, and receipts only ever move forward (max).
            db.executemany("INSERT INTO applied (version, kind) VALUES (?, ?)", log)
            db.executemany(
                "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        m.id,
                        m.sender,
                        m.recipient,
                        m.peer_of(user),
                        m.body,
                        m.client_msg_id,
                        m.created_at,
                        m.recalled_at,
                    )
                    for m in applied.messages
                ],
            )
            db.executemany(
                "UPDATE messages SET body = '', recalled_at = ? WHERE id = ?",
                [(r.recalled_at, r.message_id) for r in applied.recalls],
            )
            db.executemany(
                "INSERT INTO reads VALUES (?, ?, ?) ON CONFLICT (reader, peer) DO UPDATE"
                " SET up_to_message_id = max(up_to_message_id, excluded.up_to_message_id)",
                [(r.reader, r.peer, r.up_to_message_id) for r in applied.reads],
            )
            self._put(db, "acked", str(self.acked()))
            self._before_cursor(page)
            self._put(db, "cursor", str(max(cursor, page.next_since)))
            if page.next_since > before:
                self._put(db, "cursor_id", page.cursor_id)
            if page.history_fallback:
                self._put(db, "gaps", str(self.gaps() + 1))
        return applied

    def _before_cursor(self, page: Page) -> None:
        """Called inside apply_page's transaction, after the entries and before the cursor:
        the point a crash must not split (the conformance adapter kills itself here)."""

    def reset_stream(self) -> None:
        with self._transaction() as db:
            for table in ("messages", "reads", "applied"):
                db.execute(f"DELETE FROM {table}")  # fixed table names
            self._put(db, "cursor", "0")
            self._put(db, "cursor_id", None)
            self._put(db, "acked", "0")
            self._acked = 0

    def clear(self) -> None:
        with self._transaction() as db:
            for table in ("state", "messages", "reads", "applied", "outbox"):
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
                "INSERT INTO outbox (client_msg_id, recipient, body, state, message_id, error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    item.client_msg_id,
                    item.to,
                    item.body,
                    item.state.value,
                    item.message_id,
                    item.error,
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
            "SELECT client_msg_id, recipient, body, state, message_id, error FROM outbox"
            " ORDER BY seq"
        )
        return [OutboxItem(r[0], r[1], r[2], OutboxState(r[3]), r[4], r[5]) for r in rows]

    def messages(self, peer: str | None = None) -> list[Message]:
        columns = "id, sender, recipient, body, client_msg_id, created_at, recalled_at"
        if peer is None:
            rows = self._rows(f"SELECT {columns} FROM messages ORDER BY id")
        else:
            rows = self._rows(f"SELECT {columns} FROM messages WHERE peer = ? ORDER BY id", (peer,))
        return [Message(*row) for row in rows]

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
