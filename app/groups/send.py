"""A group send as the API answers it: the rate limit, the write, the wake-up, the JSON body.

Called by the route (app.api.groups) and by the edge's hot path for plain group sends
(app.edge.hotpaths), which answer it the same way.
"""

from __future__ import annotations

from app.accounts.auth import DeviceContext
from app.config import Settings
from app.groups import messages
from app.inbox.rates import RateLimit, stored_or_refused
from app.notifier import Notifier
from app.push.pushers import push_wait
from app.schemas import GroupSendIn
from app.store import Store

__all__ = ["deliver"]


async def deliver(
    store: Store,
    notifier: Notifier,
    settings: Settings,
    send_rate: RateLimit | None,
    device: DeviceContext,
    group_id: str,
    body: GroupSendIn,
) -> tuple[int, bytes]:
    """The send, for the route and for app.edge.hotpaths: (status, JSON body).

    `send_rate` (None: no limit) is checked before anything is written, as for a direct
    send (app.inbox.send.deliver): a 429 is never a message stored in part, and a retry of a
    stored message is still answered with it.
    """
    if send_rate is not None and (wait := send_rate.take(device.user_id)):
        sent = await stored_or_refused(
            wait,
            body.client_msg_id,
            lambda client_msg_id: messages.stored_send(store.groups, device.user_id, client_msg_id),
        )
    else:
        sent = await messages.send(
            store.groups,
            group_id,
            device.user_id,
            body.body,
            body.client_msg_id,
            settings.max_body_bytes,
            push_wait(settings),
        )
    if sent.created:
        notifier.notify(sent.members)  # every member, after commit
    # Read your writes: the sender's next sync does not read a replica behind this send.
    store.db.replicas.wrote(device.user_id, sent.version)
    return 201 if sent.created else 200, sent.body()
