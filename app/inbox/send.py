"""A send as the API answers it: the rate limit, the write, the wake-up, the JSON body.

Called by the route (app.api.sync) and by the edge's hot path for plain sends
(app.edge.hotpaths), which answer it the same way.
"""

from __future__ import annotations

import orjson

from app.accounts.auth import DeviceContext
from app.config import Settings
from app.db.engine import Database
from app.errors import AppError
from app.inbox import sync
from app.inbox.rates import RateLimit, retry_after
from app.notifier import Notifier
from app.push.pushers import push_wait
from app.schemas import SendIn

__all__ = ["deliver"]


async def deliver(
    db: Database,
    notifier: Notifier,
    settings: Settings,
    send_rate: RateLimit | None,
    device: DeviceContext,
    body: SendIn,
) -> tuple[int, bytes]:
    """The send, for the route (app.api.sync) and for app.edge.hotpaths: (status, JSON body).

    `send_rate` (None: no limit) is checked before anything is written, so a 429 is never a
    message stored in part, and never one lost: the client was told it was not sent.
    """
    if send_rate is not None and (wait := send_rate.take(device.user_id)):
        result = await _stored_or_refused(db, device, body, wait)
    else:
        result = await sync.send_message(
            db,
            device.user_id,
            body.to,
            body.body,
            body.client_msg_id,
            settings.max_body_bytes,
            push_wait(settings),
        )
    if result.created:
        notifier.notify((device.user_id, body.to))
    db.replicas.wrote(device.user_id, result.version)
    content = orjson.dumps({"message": result.message, "version": result.version})
    return 201 if result.created else 200, content


async def _stored_or_refused(
    db: Database, device: DeviceContext, body: SendIn, wait: float
) -> sync.SendResult:
    """A send over the rate: 429 too_many_requests, unless it is a retry of a message
    already stored, which is answered 200 with the first result as ever, so that a client
    retrying after a lost answer learns that its message went through rather than being
    told to wait. The look-up costs a statement only when the sender is over the rate."""
    if body.client_msg_id is not None:
        found = await sync.existing_send(db, device.user_id, body.client_msg_id)
        if found is not None:
            return found
    raise AppError(
        429,
        "too_many_requests",
        "too many messages sent; retry after Retry-After seconds",
        headers={"Retry-After": retry_after(wait)},
    )
