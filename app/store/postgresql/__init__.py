"""The PostgreSQL store: its Database (two pools, replicas, the server's clock) and each
part's statements whole, named, in its `.sql` file."""

from app.store.postgresql.accounts import PostgresAccounts as Accounts
from app.store.postgresql.database import PostgresDatabase as Database
from app.store.postgresql.groups import PgGroupStore as Groups
from app.store.postgresql.inbox import PostgresInbox as Inbox
from app.store.postgresql.push import PostgresPush as Push
from app.store.postgresql.retention import PostgresRetention as Retention

__all__ = ["Accounts", "Database", "Groups", "Inbox", "Push", "Retention"]
