"""Send and fetch-since: the units of work behind the sync protocol (acks: app/inbox/acks.py).

What they ask of the database is the store's (app.store.inbox); this is the domain's side.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.db.models import Device
from app.errors import AppError
from app.inbox.messages import MESSAGE_COLUMNS, format_time, message_data, message_row_data
from app.store import open_store
from app.store.inbox import FetchedEntry, Outgoing, Page
from app.store.inbox import Sent as SendResult

__all__ = [
    "MESSAGE_COLUMNS",
    "FetchedEntry",
    "Page",
    "SendResult",
    "bump_versions",
    "device_cursor",
    "existing_send",
    "fetch_since",
    "format_time",
    "message_data",
    "message_row_data",
    "render_page",
    "send_message",
]


async def bump_versions(
    db: Database, session: AsyncSession, user_ids: Iterable[str]
) -> dict[str, int]:
    """Take the next version of each user in `session`'s transaction, holding their rows
    locked until commit (the lock rule, app/store/inbox.py). Returns only the users that
    exist."""
    return await open_store(db).inbox.bump_versions(session, user_ids)


async def existing_send(db: Database, sender: str, client_msg_id: str) -> SendResult | None:
    """The stored message that `sender` sent with `client_msg_id`, as its send answered."""
    return await open_store(db).inbox.find_send(sender, client_msg_id)


async def send_message(
    db: Database,
    sender: str,
    recipient: str,
    body: str,
    client_msg_id: str | None,
    max_body_bytes: int,
    push_wait: float | None = None,
) -> SendResult:
    """One unit of work: bump both versions, write the index row and both inbox entries, and
    with push on (`push_wait`: seconds until a push falls due, app.push.pushers.push_wait) mark the
    recipient's pushers due. A repeated client_msg_id answers the first send."""
    if len(body.encode()) > max_body_bytes:
        raise AppError(
            413, "body_too_large", f"body is larger than {max_body_bytes} bytes of UTF-8"
        )
    outgoing = Outgoing(sender, recipient, body, client_msg_id, push_wait)
    try:
        sent = await open_store(db).inbox.send(outgoing)
    except IntegrityError:
        if client_msg_id is None:
            raise
        # The key is one of the sender's group messages: not a retry of this send.
        raise AppError(
            409, "client_msg_id_taken", "client_msg_id is taken by a group message of the sender"
        ) from None
    if sent is None:
        raise AppError(404, "recipient_not_found", f"no user {recipient!r}")
    return sent


async def fetch_since(
    db: Database,
    user_id: str,
    since: int,
    limit: int,
    *,
    since_id: str | None = None,
    primary: bool = False,
) -> Page:
    """Everything newer than `since`, oldest first, at most `limit` entries, read in one
    snapshot (app.store.inbox.InboxStore.read_page).

    `primary`: read the primary even when a replica serves. A woken long-poll does: it was
    woken by a commit on the primary, which a replica may not have replayed yet; asking it
    first would add its replay lag, or a round trip, to every wake-up.
    """
    return await open_store(db).inbox.read_page(
        user_id, since, limit, since_id=since_id, primary=primary
    )


def render_page(page: Page) -> bytes:
    """Serialise a page without decoding the stored payloads: they are JSON already."""
    return orjson.dumps(
        {
            "entries": [
                {
                    "version": entry.version,
                    "id": entry.id,
                    "kind": entry.kind,
                    "created_at": format_time(entry.created_at),
                    "data": orjson.Fragment(entry.data),
                }
                for entry in page.entries
            ],
            "next_since": page.next_since,
            "latest_version": page.latest_version,
            "has_more": page.has_more,
            "history_fallback": page.history_fallback,
        }
    )


async def device_cursor(db: Database, device_id: str) -> int:
    """Where a sync without `since` resumes: the device's ack cursor."""
    async with db.statement() as conn:
        cursor = await conn.scalar(
            select(Device.acked_version).where(Device.device_id == device_id)
        )
    if cursor is None:
        raise AppError(401, "unauthorized", "invalid or revoked token")
    return cursor
