"""The SQLite store: its Database (one file, one engine, the host's clock) and its parts:
one process, one writer at a time, statement by statement."""

from app.store.sqlite.accounts import SqliteAccounts as Accounts
from app.store.sqlite.database import SqliteDatabase as Database
from app.store.sqlite.groups import SqliteGroupStore as Groups
from app.store.sqlite.inbox import SqliteInbox as Inbox
from app.store.sqlite.push import SqlitePush as Push
from app.store.sqlite.retention import SqliteRetention as Retention

__all__ = ["Accounts", "Database", "Groups", "Inbox", "Push", "Retention"]
