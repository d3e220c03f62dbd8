"""Conversation list and per-conversation history, for a device that starts from nothing."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Response

from app import history
from app.api.deps import CurrentDevice, DbDep, SettingsDep
from app.config import Settings
from app.errors import AppError
from app.schemas import ConversationsPage, HistoryPage

router = APIRouter(tags=["history"])

DEFAULT_LIMIT = 50


def _checked_limit(limit: int | None, settings: Settings) -> int:
    if limit is None:
        return min(DEFAULT_LIMIT, settings.history_max_limit)
    if limit > settings.history_max_limit:
        raise AppError(
            422,
            "limit_out_of_range",
            f"limit must be between 1 and {settings.history_max_limit}",
        )
    return limit


@router.get("/conversations", response_model=ConversationsPage)
async def conversations(
    device: CurrentDevice,
    db: DbDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, description="Conversations per page (1..200)")] = None,
    before: Annotated[
        int | None, Query(ge=1, description="The previous page's next_before")
    ] = None,
) -> Response:
    page = await history.list_conversations(
        db, device.user_id, _checked_limit(limit, settings), before
    )
    return Response(orjson.dumps(page), media_type="application/json")


@router.get("/conversations/{peer}/messages", response_model=HistoryPage)
async def messages(
    device: CurrentDevice,
    db: DbDep,
    settings: SettingsDep,
    peer: Annotated[str, Path(max_length=64)],
    before_id: Annotated[
        int | None, Query(ge=1, description="The previous page's next_before_id")
    ] = None,
    limit: Annotated[int | None, Query(ge=1, description="Messages per page (1..200)")] = None,
) -> Response:
    page = await history.list_messages(
        db, device.user_id, peer, _checked_limit(limit, settings), before_id
    )
    return Response(orjson.dumps(page), media_type="application/json")
