"""Send, sync and ack."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response

from app import sync
from app.acks import AckBatcher
from app.api.deps import AcksDep, CurrentDevice, DbDep, NotifierDep, SettingsDep
from app.auth import DeviceContext
from app.config import Settings
from app.db import Database
from app.errors import AppError
from app.longpoll import TICKET, Ticket
from app.notifier import Notifier
from app.schemas import MAX_ID, AckIn, AckOut, SendIn, SendOut, SyncPage

router = APIRouter(tags=["sync"])


@router.post(
    "/messages",
    status_code=201,
    response_model=SendOut,
    responses={200: {"model": SendOut, "description": "A retry of an earlier send"}},
)
async def send(
    body: SendIn,
    device: CurrentDevice,
    db: DbDep,
    notifier: NotifierDep,
    settings: SettingsDep,
) -> Response:
    status, content = await deliver(db, notifier, settings, device, body)
    return Response(content, status_code=status, media_type="application/json")


async def deliver(
    db: Database, notifier: Notifier, settings: Settings, device: DeviceContext, body: SendIn
) -> tuple[int, bytes]:
    """The send, for the route above and for app.hotpaths: (status, JSON body)."""
    result = await sync.send_message(
        db, device.user_id, body.to, body.body, body.client_msg_id, settings.max_body_bytes
    )
    if result.created:
        notifier.notify((device.user_id, body.to))
    content = orjson.dumps({"message": result.message, "version": result.version})
    return 201 if result.created else 200, content


@router.get("/sync", response_model=SyncPage)
async def sync_since(
    request: Request,
    device: CurrentDevice,
    db: DbDep,
    notifier: NotifierDep,
    settings: SettingsDep,
    since: Annotated[
        int | None,
        Query(ge=0, le=MAX_ID, description="Last version seen; default: the device's ack cursor"),
    ] = None,
    limit: Annotated[int | None, Query(ge=1, description="Entries per page (1..1000)")] = None,
    timeout: Annotated[
        float,
        Query(
            ge=0,
            description="Seconds to wait when there is nothing new (clamped to the server's "
            "maximum, 60 by default); the wait itself happens in app.longpoll",
        ),
    ] = 0,
) -> Response:
    del timeout  # validated and documented here; app.longpoll does the waiting
    if limit is None:
        limit = settings.sync_default_limit
    if limit > settings.sync_max_limit:
        raise AppError(
            422, "limit_out_of_range", f"limit must be between 1 and {settings.sync_max_limit}"
        )
    position = await sync.device_cursor(db, device.device_id) if since is None else since
    ticket: Ticket | None = request.scope.get(TICKET)
    if ticket is not None:
        # A long-poll (see app.longpoll): subscribe, or forget past wake-ups, *before* the
        # read, so that a commit landing during the read still wakes the wait that follows.
        if ticket.waiter is None:
            ticket.waiter = notifier.subscribe(device.user_id)
        else:
            ticket.waiter.rearm()
        ticket.user_id, ticket.device_id = device.user_id, device.device_id
        ticket.position, ticket.limit = position, limit
    page = await sync.fetch_since(db, device.user_id, position, limit)
    # The device has these entries now: it is not to be pushed for them (app.push).
    request.app.state.seen.saw(device.device_id, page.next_since)
    if ticket is not None:
        ticket.empty = not page.entries and page.next_since == position
    return Response(sync.render_page(page), media_type="application/json")


@router.post("/ack", response_model=AckOut)
async def ack(body: AckIn, device: CurrentDevice, acks: AcksDep) -> Response:
    status, content = await acknowledge(acks, device, body)
    return Response(content, status_code=status, media_type="application/json")


async def acknowledge(acks: AckBatcher, device: DeviceContext, body: AckIn) -> tuple[int, bytes]:
    """The ack, for the route above and for app.hotpaths: (status, JSON body)."""
    # Group commit: this waits for the batch holding the ack to commit.
    cursor = await acks.ack(device.user_id, device.device_id, body.version)
    return 200, orjson.dumps({"device_id": device.device_id, "acked_version": cursor})
