"""Send, sync and ack."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.accounts.auth import token_digest
from app.api.deps import AcksDep, CurrentDevice, DbDep, LongPollsDep, NotifierDep, SettingsDep
from app.inbox.acks import acknowledge
from app.inbox.send import deliver
from app.openapi import problem_responses
from app.schemas import AckIn, AckOut, SendIn, SendOut, SyncPage, SyncQuery

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
            "unauthorized",
            "recipient_not_found",
            "body_too_large",
            "too_many_requests",
            "client_msg_id_taken",
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
    longpolls: LongPollsDep,
    query: Annotated[SyncQuery, Query()],
) -> Response:
    # The edge serves plain syncs (app.edge.hotpaths); this route serves the rest, through
    # the same read and wait. `device` declares and checks the bearer token; wait_for_page
    # finds it cached.
    del device
    digest = token_digest(request.headers.get("authorization", ""))
    assert digest is not None  # authenticated: the header holds a bearer token
    page = await longpolls.wait_for_page(digest, query, request.receive)
    if page is None:
        # The client hung up while waiting: this answer goes nowhere (nginx's "closed").
        return Response(status_code=499)
    return Response(page, media_type="application/json")


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
