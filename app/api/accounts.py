"""Accounts and devices."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app import auth, throttle
from app.api.deps import CurrentDevice, DbDep, NotifierDep, PasswordsDep
from app.schemas import DeviceOut, DevicesOut, LoginIn, LoginOut, UserIn, UserOut

router = APIRouter(tags=["accounts"])


@router.post("/users", status_code=201, response_model=UserOut)
async def create_user(
    body: UserIn, request: Request, db: DbDep, passwords: PasswordsDep
) -> UserOut:
    # Throttled before the password is hashed: a refused attempt costs one statement.
    await throttle.attempt_registration(db, throttle.client_address(request.scope))
    await auth.create_user(db, passwords, body.user_id, body.password)
    return UserOut(user_id=body.user_id)


@router.post("/login", status_code=201, response_model=LoginOut)
async def login(body: LoginIn, request: Request, db: DbDep, passwords: PasswordsDep) -> LoginOut:
    # Counted before the password is hashed (see app.throttle): a refused guess costs one
    # statement, not a hash.
    await throttle.attempt_login(db, body.user_id, throttle.client_address(request.scope))
    device_id, token = await auth.login(
        db, passwords, body.user_id, body.password, body.device_name
    )
    await throttle.login_succeeded(db, body.user_id)
    return LoginOut(user_id=body.user_id, device_id=device_id, access_token=token)


@router.post("/logout", status_code=204)
async def logout(device: CurrentDevice, db: DbDep, notifier: NotifierDep) -> Response:
    await auth.logout(db, device.device_id)
    notifier.revoke((device.device_id,))
    return Response(status_code=204)


@router.get("/devices", response_model=DevicesOut)
async def devices(device: CurrentDevice, db: DbDep) -> DevicesOut:
    rows = await auth.list_devices(db, device.user_id)
    return DevicesOut(devices=[DeviceOut.model_validate(row, from_attributes=True) for row in rows])
