"""The SQLite store: one process, one writer at a time, statement by statement."""

from app.store.sqlite.accounts import SqliteAccounts as Accounts
from app.store.sqlite.groups import SqliteGroupStore as Groups
from app.store.sqlite.inbox import SqliteInbox as Inbox
from app.store.sqlite.push import SqlitePush as Push
from app.store.sqlite.retention import SqliteRetention as Retention

__all__ = ["Accounts", "Groups", "Inbox", "Push", "Retention"]
