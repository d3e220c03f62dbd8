"""Recall and read receipts."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Response

from app.api.deps import CurrentDevice, DbDep, NotifierDep, SettingsDep, StoreDep
from app.groups import messages as group_messages
from app.inbox import operations
from app.openapi import problem_responses
from app.schemas import MAX_ID, NO_NUL, ReadIn, ReadOut, RecallOut

router = APIRouter()


@router.post(
    "/messages/{message_id}/recall",
    response_model=RecallOut,
    operation_id="recallMessage",
    tags=["messages"],
    summary="Recall a message (sender only)",
    responses=problem_responses(
        "unauthorized", "not_sender", "message_not_found", "recall_window_passed"
    ),
)
async def recall(
    message_id: Annotated[
        int, Path(ge=1, le=MAX_ID, description="The message's id.", examples=[42])
    ],
    device: CurrentDevice,
    db: DbDep,
    notifier: NotifierDep,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    # A group message is recalled as an event of its group (app.groups.messages).
    grouped = await group_messages.recall(
        store.groups, device.user_id, message_id, settings.recall_window_seconds
    )
    if grouped is not None:
        if grouped.woken:
            notifier.notify(grouped.woken)
        return Response(orjson.dumps({"message": grouped.message}), media_type="application/json")
    result = await operations.recall_message(
        db, device.user_id, message_id, settings.recall_window_seconds
    )
    if result.changed:
        # After commit: a woken long-poll must find the recall when it re-reads.
        notifier.notify(result.parties)
    return Response(orjson.dumps({"message": result.message}), media_type="application/json")


@router.post(
    "/conversations/{peer}/read",
    response_model=ReadOut,
    operation_id="markRead",
    tags=["conversations"],
    summary="Move the read cursor of a conversation forward",
    responses=problem_responses("unauthorized", "conversation_not_found", "message_not_found"),
)
async def read(
    peer: Annotated[
        str,
        Path(
            max_length=64,
            pattern=NO_NUL,
            description="The other party's user id (no NUL).",
            examples=["bob"],
        ),
    ],
    body: ReadIn,
    device: CurrentDevice,
    db: DbDep,
    notifier: NotifierDep,
) -> ReadOut:
    result = await operations.mark_read(db, device.user_id, peer, body.up_to_message_id)
    if result.changed:
        notifier.notify((device.user_id, peer))
        db.replicas.wrote(device.user_id, result.version)
    return ReadOut(peer=peer, read_up_to_id=result.read_up_to_id, version=result.version)
