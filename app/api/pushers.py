"""Pushers: a device's registration with a Matrix push gateway (docs/push.md)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Response

from app import push
from app.api.deps import CurrentDevice, DbDep, SettingsDep
from app.schemas import PusherCreated, PusherIn, PushersOut

router = APIRouter(tags=["push"])


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"type": "object"}}},
    }


@router.post(
    "/pushers",
    status_code=201,
    response_model=PusherCreated,
    responses={
        200: {"model": PusherCreated, "description": "The same app_id and pushkey: replaced"},
        422: _problem("gateway_not_allowed, or validation_error"),
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


@router.get("/pushers", response_model=PushersOut)
async def pushers(device: CurrentDevice, db: DbDep) -> Response:
    found = await push.list_pushers(db, device.user_id)
    return Response(orjson.dumps({"pushers": found}), media_type="application/json")


@router.delete(
    "/pushers/{app_id}/{pushkey}",
    status_code=204,
    responses={404: _problem("pusher_not_found")},
)
async def remove(app_id: str, pushkey: str, device: CurrentDevice, db: DbDep) -> Response:
    await push.delete_pusher(db, device.user_id, app_id, pushkey)
    return Response(status_code=204)
