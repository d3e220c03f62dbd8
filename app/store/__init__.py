"""What the domain asks of the database, behind one interface; and the one place that knows
which database that is.

`backend_for(settings)` reads the kind of database from MSGSYNC_DATABASE_URL, once: the
PostgreSQL implementation (`app.store.postgresql`: whole, named SQL statements in `.sql`
files, see app.store.queries) or the SQLite one (`app.store.sqlite`, the embedded default:
one process, one writer at a time). It answers with that database's Database class, whose
class attributes `serve` and the CLI ask before anything is opened (serves_one_process,
migrates_at_start); `open_database(settings)` makes one (its pools, its clock, its
replicas), and `open_store(db)` gives the domain's parts for it. No module outside this
package asks which database it runs on.

The store is made of one part per domain (`store.inbox`, `store.accounts`, `store.push`,
`store.retention`, ...), each an interface declared in `app/store/<domain>.py` and
implemented in `app/store/postgresql/<domain>.py` (with its `<domain>.sql`) and
`app/store/sqlite/<domain>.py`; each implementation's `database.py` holds its Database. The
contract tests (tests/store/) run the same assertions against both implementations.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.engine import Database

if TYPE_CHECKING:
    from app.store.accounts import AccountsStore
    from app.store.groups import GroupStore
    from app.store.inbox import InboxStore
    from app.store.push import PushStore
    from app.store.retention import RetentionStore

__all__ = ["Store", "backend_for", "open_database", "open_store"]

# Both implementations are imported with this package, never on a store's first opening:
# what they bind at import (the host clock among it) is then the same whatever runs first.
from app.store import postgresql, sqlite

# SQLAlchemy's name for the database a URL names (its backend), and the implementation.
_IMPLEMENTATIONS: dict[str, ModuleType] = {"postgresql": postgresql, "sqlite": sqlite}


def _implementation(settings: Settings) -> ModuleType:
    """The one reading of which database settings.database_url names."""
    # Settings accepted the URL (app.config.database_url), so its backend is one of these.
    return _IMPLEMENTATIONS[make_url(settings.database_url).get_backend_name()]


def backend_for(settings: Settings) -> type[Database]:
    """The Database class for settings.database_url's database, to ask before opening it
    (serves_one_process, migrates_at_start)."""
    database: type[Database] = _implementation(settings).Database
    return database


def open_database(settings: Settings) -> Database:
    """The process's access to settings.database_url's database (its engines; no connection
    is made until one is used)."""
    # Each implementation's Database is made from the settings alone (the base class from
    # the parts each makes).
    db: Database = _implementation(settings).Database(settings)
    return db


class Store:
    """The database as the domain sees it: one attribute per domain part."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # The implementation whose Database this is: the URL was read once, by open_database.
        implementation = next(
            module for module in _IMPLEMENTATIONS.values() if isinstance(db, module.Database)
        )
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
