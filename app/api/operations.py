"""Recall and read receipts."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Response

from app import operations
from app.api.deps import CurrentDevice, DbDep, NotifierDep, SettingsDep
from app.schemas import MAX_ID, ReadIn, ReadOut, RecallOut

router = APIRouter(tags=["operations"])


@router.post("/messages/{message_id}/recall", response_model=RecallOut)
async def recall(
    message_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    device: CurrentDevice,
    db: DbDep,
    notifier: NotifierDep,
    settings: SettingsDep,
) -> Response:
    result = await operations.recall_message(
        db, device.user_id, message_id, settings.recall_window_seconds
    )
    if result.changed:
        # After commit: a woken long-poll must find the recall when it re-reads.
        notifier.notify(result.parties)
    return Response(orjson.dumps({"message": result.message}), media_type="application/json")


@router.post("/conversations/{peer}/read", response_model=ReadOut)
async def read(
    peer: Annotated[str, Path(max_length=64)],
    body: ReadIn,
    device: CurrentDevice,
    db: DbDep,
    notifier: NotifierDep,
) -> ReadOut:
    result = await operations.mark_read(db, device.user_id, peer, body.up_to_message_id)
    if result.changed:
        notifier.notify((device.user_id, peer))
    return ReadOut(peer=peer, read_up_to_id=result.read_up_to_id, version=result.version)
