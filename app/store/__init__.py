"""What the domain asks of the database, behind one interface.

`open_store(db)` picks the implementation once, at start-up: `app.store.postgresql` (whole,
named SQL statements in `.sql` files, see app.store.queries) or `app.store.sqlite` (the
embedded default: one writer at a time). No module outside this package asks which database
it runs on.

The store is made of one part per domain (`store.inbox`, `store.accounts`, `store.push`,
`store.retention`, ...), each an interface declared in `app/store/<domain>.py` and
implemented in `app/store/postgresql/<domain>.py` (with its `<domain>.sql`) and
`app/store/sqlite/<domain>.py`. The contract tests (tests/store/) run the same assertions
against both implementations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

if TYPE_CHECKING:
    from app.db.engine import Database
    from app.store.accounts import AccountsStore
    from app.store.groups import GroupStore
    from app.store.inbox import InboxStore
    from app.store.push import PushStore
    from app.store.retention import RetentionStore

__all__ = ["Store", "open_store"]

# Both implementations are imported with this package, never on a store's first opening:
# what they bind at import (the host clock among it) is then the same whatever runs first.
from app.store import postgresql, sqlite


class Store:
    """The database as the domain sees it: one attribute per domain part."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.is_embedded = db.is_sqlite
        implementation = sqlite if self.is_embedded else postgresql
        self.inbox: InboxStore = implementation.Inbox(db)
        self.accounts: AccountsStore = implementation.Accounts(db)
        self.push: PushStore = implementation.Push(db)
        self.retention: RetentionStore = implementation.Retention(db)
        self.groups: GroupStore = implementation.Groups(db)


_opened: WeakKeyDictionary[Database, Store] = WeakKeyDictionary()


def open_store(db: Database) -> Store:
    """The store for `db`'s database, chosen once per Database: the lifespan opens it, and
    the domain's functions, which are handed the Database, reach the same one."""
    store = _opened.get(db)
    if store is None:
        store = _opened[db] = Store(db)
    return store
