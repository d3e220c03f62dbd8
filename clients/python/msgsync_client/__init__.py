"""msgsync's Python SDK: a local store, an outbox, and the sync loop with delayed acks."""

from msgsync_client.client import Client, Event, Gap, Handlers, Options, SyncResult
from msgsync_client.errors import (
    ApiError,
    HistoryChanged,
    HistoryRewritten,
    MsgsyncError,
    NotLoggedIn,
    SinceAhead,
    Unauthorized,
    Unavailable,
)
from msgsync_client.facade import SyncClient
from msgsync_client.models import (
    Entry,
    Message,
    OutboxItem,
    OutboxState,
    Page,
    ReadReceipt,
    Recall,
    Session,
)
from msgsync_client.sqlite_store import SqliteStore
from msgsync_client.store import Applied, MemoryStore, Store

__all__ = [
    "ApiError",
    "Applied",
    "Client",
    "Entry",
    "Event",
    "Gap",
    "Handlers",
    "HistoryChanged",
    "HistoryRewritten",
    "MemoryStore",
    "Message",
    "MsgsyncError",
    "NotLoggedIn",
    "Options",
    "OutboxItem",
    "OutboxState",
    "Page",
    "ReadReceipt",
    "Recall",
    "Session",
    "SinceAhead",
    "SqliteStore",
    "Store",
    "SyncClient",
    "SyncResult",
    "Unauthorized",
    "Unavailable",
]
