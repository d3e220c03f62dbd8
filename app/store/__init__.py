"""What the domain asks of the database, behind one interface.

`open_store(db)` picks the implementation once, at start-up: `app.store.postgresql` (whole,
named SQL statements in `.sql` files, see app.store.queries) or `app.store.sqlite` (the
embedded default: one writer at a time). No module outside this package asks which database
it runs on.

The store is made of one part per domain (`store.groups`, ...), each an interface declared
in `app/store/<domain>.py` and implemented in `app/store/postgresql/<domain>.py` (with its
`<domain>.sql`) and `app/store/sqlite/<domain>.py`. The contract tests (tests/store/) run
the same assertions against both implementations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.db.engine import Database
    from app.store.groups import GroupStore

__all__ = ["Store", "open_store"]


class Store:
    """The database as the domain sees it: one attribute per domain part."""

    def __init__(self, db: Database, groups: GroupStore) -> None:
        self.db = db
        self.is_embedded = db.is_sqlite
        self.groups = groups


def open_store(db: Database) -> Store:
    """The store for `db`'s database, chosen once (the lifespan calls this)."""
    if db.is_sqlite:
        from app.store.sqlite.groups import SqliteGroupStore

        return Store(db, SqliteGroupStore(db))
    from app.store.postgresql.groups import PgGroupStore

    return Store(db, PgGroupStore(db))
