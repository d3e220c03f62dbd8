"""The migrations build exactly the models' schema, and go down and up again."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from alembic import command
from app.config import Settings
from app.db.migrations import alembic_config, downgrade_to_base, upgrade_to_head
from app.db.models import Base
from tests.conftest import create_pg_database, drop_pg_database


def _schema_drift(url: str) -> list[object]:
    engine = create_engine(Settings(database_url=url).database_url.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    upgrade_to_head(url)
    downgrade_to_base(url)
    upgrade_to_head(url)
    assert _schema_drift(url) == []


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_postgresql_round_trip_without_drift(pg_admin_url: str) -> None:
    url = create_pg_database(pg_admin_url)
    try:
        _round_trip(url)
    finally:
        drop_pg_database(pg_admin_url, url)


def test_sqlite_round_trip_without_drift(tmp_path: Path) -> None:
    _round_trip(Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}").database_url)


@pytest.mark.parametrize("table", ["users", "devices", "messages", "inbox", "conversations"])
def test_every_table_is_migrated(table: str) -> None:
    assert table in Base.metadata.tables


def _entries_get_their_own_ids(url: str) -> None:
    """Entries stored before the entry-id migration each get an id of their own, and rows
    written afterwards (by statements that do not name the column) get fresh ones."""
    config = alembic_config(url)
    command.upgrade(config, "3f9c2b7e1d40")
    engine = create_engine(Settings(database_url=url).database_url.replace("+aiosqlite", ""))
    insert_entry = text(
        "INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)"
        " VALUES ('ann', :version, 'read', CURRENT_TIMESTAMP, NULL, '{}')"
    )
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (user_id, password_hash, latest_version, floor_version,"
                    " created_at)"
                    " VALUES ('ann', 'x', 3, 0, CURRENT_TIMESTAMP)"
                )
            )
            for version in (1, 2, 3):
                conn.execute(insert_entry, {"version": version})
        upgrade_to_head(url)
        with engine.begin() as conn:
            conn.execute(insert_entry, {"version": 4})
            ids = conn.execute(text("SELECT entry_id FROM inbox")).scalars().all()
    finally:
        engine.dispose()
    assert len(ids) == 4
    assert all(ids)
    assert len({str(i).replace("-", "") for i in ids}) == 4


def test_postgresql_entries_get_ids(pg_admin_url: str) -> None:
    url = create_pg_database(pg_admin_url)
    try:
        _entries_get_their_own_ids(url)
    finally:
        drop_pg_database(pg_admin_url, url)


def test_sqlite_entries_get_ids(tmp_path: Path) -> None:
    _entries_get_their_own_ids(Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}").database_url)


def _conversations_become_pairs_and_back(url: str) -> None:
    """A pair's two per-user rows become its one row (each party's read cursor in its own
    column, the pair in code point order as messages.pair_lo/pair_hi have it), and back."""
    config = alembic_config(url)
    command.upgrade(config, "6c3a9e1f4b28")
    engine = create_engine(Settings(database_url=url).database_url.replace("+aiosqlite", ""))
    by_user = text(
        "SELECT user_id, peer, last_message_id, read_up_to_id FROM conversations"
        " ORDER BY user_id, peer"
    )
    # "Zed" sorts before "amy" by code point, after it in many collations.
    rows = [("amy", "Zed", 9, 7), ("Zed", "amy", 9, 9), ("amy", "amy", 4, 0)]
    try:
        with engine.begin() as conn:
            for user in ("amy", "Zed"):
                conn.execute(
                    text(
                        "INSERT INTO users (user_id, password_hash, latest_version,"
                        " floor_version, created_at) VALUES (:u, 'x', 0, 0, CURRENT_TIMESTAMP)"
                    ),
                    {"u": user},
                )
            for user, peer, last, read in rows:
                conn.execute(
                    text(
                        "INSERT INTO conversations (user_id, peer, last_message_id, read_up_to_id)"
                        " VALUES (:user, :peer, :last, :read)"
                    ),
                    {"user": user, "peer": peer, "last": last, "read": read},
                )
            before = sorted(map(tuple, conn.execute(by_user)))
        upgrade_to_head(url)
        with engine.begin() as conn:
            pairs = conn.execute(
                text(
                    "SELECT pair_lo, pair_hi, last_message_id, read_lo, read_hi"
                    " FROM conversations ORDER BY last_message_id"
                )
            )
            assert [tuple(p) for p in pairs] == [("amy", "amy", 4, 0, 0), ("Zed", "amy", 9, 9, 7)]
        command.downgrade(config, "6c3a9e1f4b28")
        with engine.begin() as conn:
            assert sorted(map(tuple, conn.execute(by_user))) == before == sorted(rows)
    finally:
        engine.dispose()


def test_postgresql_conversations_become_pairs(pg_admin_url: str) -> None:
    url = create_pg_database(pg_admin_url)
    try:
        _conversations_become_pairs_and_back(url)
    finally:
        drop_pg_database(pg_admin_url, url)


def test_sqlite_conversations_become_pairs(tmp_path: Path) -> None:
    _conversations_become_pairs_and_back(
        Settings(database_url=f"sqlite:///{tmp_path / 'm.db'}").database_url
    )
