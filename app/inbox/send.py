"""A send as the API answers it: the rate limit, the write, the wake-up, the JSON body.

Called by the route (app.api.sync) and by the edge's hot path for plain sends
(app.edge.hotpaths), which answer it the same way.
"""

from __future__ import annotations

import orjson

from app.accounts.auth import DeviceContext
from app.config import Settings
from app.db.engine import Database
from app.inbox import sync
from app.inbox.rates import RateLimit, stored_or_refused
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
        result = await stored_or_refused(
            wait,
            body.client_msg_id,
            lambda client_msg_id: sync.existing_send(db, device.user_id, client_msg_id),
        )
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
