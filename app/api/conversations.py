"""Conversation list and per-conversation history, for a device that starts from nothing."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response

from app.api.deps import CurrentDevice, DbDep, SettingsDep, StoreDep
from app.config import Settings
from app.errors import AppError
from app.groups import views
from app.inbox import history
from app.openapi import problem_responses
from app.schemas import MAX_ID, NO_NUL, ConversationsPage, HistoryPage

router = APIRouter(tags=["conversations"])

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


def _limit(what: str) -> Any:
    return Query(
        ge=1,
        le=MAX_ID,
        description=f"{what} per page: 1 to MSGSYNC_HISTORY_MAX_LIMIT (200 by default; above "
        f"it, 422 `limit_out_of_range`); absent: {DEFAULT_LIMIT}.",
        json_schema_extra={"x-from-settings": {"maximum": "history_max_limit"}},
    )


@router.get(
    "/conversations",
    response_model=ConversationsPage,
    operation_id="listConversations",
    summary="List the user's conversations (direct and groups), newest message first",
    responses=problem_responses("unauthorized", "limit_out_of_range"),
)
async def conversations(
    device: CurrentDevice,
    store: StoreDep,
    settings: SettingsDep,
    limit: Annotated[int | None, _limit("Conversations")] = None,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="The previous page's `next_before`; absent: the first page.",
        ),
    ] = None,
) -> Response:
    page = await views.conversations(
        store.inbox, store.groups, device.user_id, _checked_limit(limit, settings), before
    )
    return Response(orjson.dumps(page), media_type="application/json")


@router.get(
    "/conversations/{peer}/messages",
    response_model=HistoryPage,
    operation_id="listMessages",
    summary="Page back through one conversation, newest first",
    responses=problem_responses("unauthorized", "limit_out_of_range"),
)
async def messages(
    device: CurrentDevice,
    db: DbDep,
    settings: SettingsDep,
    peer: Annotated[
        str,
        Path(
            max_length=64,
            pattern=NO_NUL,
            description="The other party's user id (no NUL). An unknown user gives an empty "
            "page, as a user never written to does (`GET /users/{user_id}` tells them apart).",
            examples=["bob"],
        ),
    ],
    before_id: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ID,
            description="The previous page's `next_before_id`; absent: the newest messages.",
        ),
    ] = None,
    limit: Annotated[int | None, _limit("Messages")] = None,
) -> Response:
    page = await history.list_messages(
        db, device.user_id, peer, _checked_limit(limit, settings), before_id
    )
    return Response(orjson.dumps(page), media_type="application/json")
