"""msgsync's Python SDK: a local store, an outbox, and the sync loop with delayed acks."""

from msgsync_client.client import Client, Event, Gap, Handlers, Options, SyncResult
from msgsync_client.errors import (
    ApiError,
    MsgsyncError,
    NotLoggedIn,
    SinceAhead,
    Unauthorized,
    Unavailable,
)
from msgsync_client.facade import SyncClient
from msgsync_client.models import (
    Conversation,
    Entry,
    EventsPage,
    Group,
    GroupEvent,
    GroupMember,
    GroupRead,
    GroupState,
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
    "Conversation",
    "Entry",
    "Event",
    "EventsPage",
    "Gap",
    "Group",
    "GroupEvent",
    "GroupMember",
    "GroupRead",
    "GroupState",
    "Handlers",
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
