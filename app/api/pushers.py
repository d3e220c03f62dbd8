"""Pushers: a device's registration with a Matrix push gateway (docs/push.md)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Response

from app.api.deps import CurrentDevice, DbDep, SettingsDep
from app.openapi import problem_responses
from app.push import pushers as push
from app.schemas import NO_NUL, PusherCreated, PusherIn, PushersOut

router = APIRouter(tags=["push"])


@router.post(
    "/pushers",
    status_code=201,
    response_model=PusherCreated,
    operation_id="registerPusher",
    summary="Register a pusher for the calling device",
    responses={
        200: {
            "model": PusherCreated,
            "description": "The same app_id and pushkey were registered already: replaced.",
        },
        201: {"description": "The pusher was registered."},
        **problem_responses(
            "unauthorized", "too_many_pushers", "gateway_not_allowed", "pusher_data_too_large"
        ),
    },
)
async def register(
    body: PusherIn, device: CurrentDevice, db: DbDep, settings: SettingsDep
) -> Response:
    pusher, created = await push.register_pusher(db, settings, device, body)
    return Response(
        orjson.dumps({"pusher": pusher}),
        status_code=201 if created else 200,
        media_type="application/json",
    )


@router.get(
    "/pushers",
    response_model=PushersOut,
    operation_id="listPushers",
    summary="List the pushers of the user's devices",
    responses=problem_responses("unauthorized"),
)
async def pushers(device: CurrentDevice, db: DbDep, settings: SettingsDep) -> Response:
    found = await push.list_pushers(db, settings, device.user_id)
    return Response(orjson.dumps({"pushers": found}), media_type="application/json")


@router.delete(
    "/pushers/{app_id}/{pushkey}",
    status_code=204,
    operation_id="deletePusher",
    summary="Remove a pusher",
    responses=problem_responses("unauthorized", "pusher_not_found"),
)
async def remove(
    app_id: Annotated[str, Path(max_length=64, pattern=NO_NUL, description="The pusher's app id.")],
    pushkey: Annotated[
        str, Path(max_length=512, pattern=NO_NUL, description="The pusher's push key.")
    ],
    device: CurrentDevice,
    db: DbDep,
) -> Response:
    await push.delete_pusher(db, device.user_id, app_id, pushkey)
    return Response(status_code=204)
