"""Send, sync and ack."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.api.deps import AcksDep, CurrentDevice, DbDep, NotifierDep, SettingsDep
from app.edge.longpoll import TICKET, Ticket
from app.errors import AppError
from app.inbox import sync
from app.inbox.acks import acknowledge
from app.inbox.send import deliver
from app.openapi import problem_responses
from app.schemas import ENTRY_ID_PATTERN, MAX_ID, AckIn, AckOut, SendIn, SendOut, SyncPage

router = APIRouter()

# What a client can do next with a sent message (OpenAPI links: clients and the fuzzing in
# tests/test_fuzz.py follow them).
_SENT_LINKS = {
    "recall": {
        "operationId": "recallMessage",
        "description": "Recall the message (sender only, within the recall window).",
        "parameters": {"message_id": "$response.body#/message/id"},
    },
    "read": {
        "operationId": "markRead",
        "description": "Mark the conversation read up to this message.",
        "parameters": {"peer": "$response.body#/message/to"},
        "requestBody": {"up_to_message_id": "$response.body#/message/id"},
    },
    "history": {
        "operationId": "listMessages",
        "description": "The conversation's history, newest first.",
        "parameters": {"peer": "$response.body#/message/to"},
    },
}


@router.post(
    "/messages",
    status_code=201,
    response_model=SendOut,
    operation_id="sendMessage",
    tags=["messages"],
    summary="Send a message",
    responses={
        201: {"description": "The message was stored and delivered.", "links": _SENT_LINKS},
        200: {
            "model": SendOut,
            "description": "A retry of an earlier send with the same `client_msg_id`: the "
            "first result, nothing sent again.",
        },
        **problem_responses(
            "unauthorized", "recipient_not_found", "body_too_large", "too_many_requests"
        ),
    },
)
async def send(
    request: Request,
    body: SendIn,
    device: CurrentDevice,
    db: DbDep,
    notifier: NotifierDep,
    settings: SettingsDep,
) -> Response:
    status, content = await deliver(
        db, notifier, settings, request.app.state.send_rate, device, body
    )
    return Response(content, status_code=status, media_type="application/json")


@router.get(
    "/sync",
    response_model=SyncPage,
    operation_id="sync",
    tags=["sync"],
    summary="Fetch the changes after a version, waiting for one if asked",
    responses={
        200: {
            "description": "A page of changes (empty when the wait ended with nothing new).",
            "links": {
                "next": {
                    "operationId": "sync",
                    "description": "The next page, or the next wait.",
                    "parameters": {"since": "$response.body#/next_since"},
                },
                "ack": {
                    "operationId": "ack",
                    "description": "Acknowledge the page once it is stored.",
                    "requestBody": {"version": "$response.body#/next_since"},
                },
            },
        },
        **problem_responses(
            "unauthorized", "since_ahead", "history_rewritten", "limit_out_of_range"
        ),
    },
)
async def sync_since(
    request: Request,
    device: CurrentDevice,
    db: DbDep,
    notifier: NotifierDep,
    settings: SettingsDep,
    since: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_ID,
            description="The last version the device has seen (`next_since` of its previous "
            "page); absent: the device's ack cursor. Above the latest version: 409.",
        ),
    ] = None,
    since_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=ENTRY_ID_PATTERN,
            description="The `id` of the entry at `since`, as the device received it. When "
            "that entry is still stored and is another one now (the server's history was "
            "rewritten by a restore or a failover), 409 `history_rewritten`. Not checked "
            "at or below the floor (pruned entries); absent: not checked.",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="Entries per page: 1 to MSGSYNC_SYNC_MAX_LIMIT (1000 by default; "
            "above it, 422 `limit_out_of_range`); absent: MSGSYNC_SYNC_DEFAULT_LIMIT (100).",
            json_schema_extra={"x-from-settings": {"maximum": "sync_max_limit"}},
        ),
    ] = None,
    timeout: Annotated[
        float,
        Query(
            ge=0,
            allow_inf_nan=False,
            description="Seconds to wait when nothing is newer than `since` (a long-poll); "
            "the answer comes as soon as a change commits. Longer waits are cut to the "
            "server's maximum (MSGSYNC_MAX_TIMEOUT, 60 s by default: `x-clamped-to`). "
            "0: answer at once.",
            json_schema_extra={"x-from-settings": {"x-clamped-to": "max_timeout"}},
        ),
    ] = 0,
) -> Response:
    del timeout  # validated and documented here; the long-poll layer does the waiting
    if limit is None:
        limit = settings.sync_default_limit
    if limit > settings.sync_max_limit:
        raise AppError(
            422, "limit_out_of_range", f"limit must be between 1 and {settings.sync_max_limit}"
        )
    position = await sync.device_cursor(db, device.device_id) if since is None else since
    ticket: Ticket | None = request.scope.get(TICKET)
    if ticket is not None:
        # A long-poll (see app.edge.longpoll): subscribe, or forget past wake-ups, *before* the
        # read, so that a commit landing during the read still wakes the wait that follows.
        if ticket.waiter is None:
            ticket.waiter = notifier.subscribe(device.user_id)
        else:
            ticket.waiter.rearm()
        ticket.user_id, ticket.device_id = device.user_id, device.device_id
        ticket.position, ticket.limit, ticket.since_id = position, limit, since_id
    page = await sync.fetch_since(db, device.user_id, position, limit, since_id=since_id)
    # The device has these entries now: it is not to be pushed for them (app.push.pushers).
    request.app.state.seen.saw(device.device_id, page.next_since)
    if ticket is not None:
        ticket.empty = not page.entries and page.next_since == position
    return Response(sync.render_page(page), media_type="application/json")


@router.post(
    "/ack",
    response_model=AckOut,
    operation_id="ack",
    tags=["sync"],
    summary="Acknowledge every change up to a version (cumulative)",
    responses=problem_responses("unauthorized", "ack_ahead", "shutting_down"),
)
async def ack(body: AckIn, device: CurrentDevice, acks: AcksDep) -> Response:
    status, content = await acknowledge(acks, device, body)
    return Response(content, status_code=status, media_type="application/json")
