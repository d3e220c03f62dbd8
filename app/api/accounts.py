"""Accounts and devices."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from app.accounts import auth, throttle
from app.api.deps import CurrentDevice, DbDep, NotifierDep, PasswordsDep
from app.db.engine import Database
from app.errors import AppError
from app.openapi import problem_responses
from app.schemas import (
    DeviceDeleteIn,
    DeviceOut,
    DevicesOut,
    LoginIn,
    LoginOut,
    PasswordChangeIn,
    UserIn,
    UserOut,
)

router = APIRouter()

log = logging.getLogger(__name__)


@router.post(
    "/users",
    status_code=201,
    response_model=UserOut,
    operation_id="createUser",
    tags=["accounts"],
    summary="Create an account",
    responses={
        201: {
            "description": "The account was created.",
            "links": {
                "login": {
                    "operationId": "login",
                    "description": "Log in as the new user.",
                    "requestBody": {
                        "user_id": "$response.body#/user_id",
                        "password": "$request.body#/password",
                    },
                }
            },
        },
        **problem_responses("user_exists", "too_many_attempts", "server_busy"),
    },
)
async def create_user(
    body: UserIn, request: Request, db: DbDep, passwords: PasswordsDep
) -> UserOut:
    # Throttled before the password is hashed: a refused attempt costs one statement.
    await throttle.attempt_registration(db, throttle.client_address(request.scope))
    await auth.create_user(db, passwords, body.user_id, body.password)
    return UserOut(user_id=body.user_id)


@router.post(
    "/login",
    status_code=201,
    response_model=LoginOut,
    operation_id="login",
    tags=["devices"],
    summary="Log in a new device",
    responses={
        201: {"description": "A new device and its token."},
        **problem_responses("bad_credentials", "too_many_attempts", "server_busy"),
    },
)
async def login(body: LoginIn, request: Request, db: DbDep, passwords: PasswordsDep) -> LoginOut:
    # Counted before the password is hashed (see app.accounts.throttle): a refused guess costs one
    # statement, not a hash.
    await throttle.attempt_login(db, body.user_id, throttle.client_address(request.scope))
    device_id, token = await auth.login(
        db, passwords, body.user_id, body.password, body.device_name
    )
    await throttle.login_succeeded(db, body.user_id)
    return LoginOut(user_id=body.user_id, device_id=device_id, access_token=token)


@router.post(
    "/logout",
    status_code=204,
    operation_id="logout",
    tags=["devices"],
    summary="Log out the calling device",
    responses={
        204: {"description": "Logged out: the token stops working at once."},
        **problem_responses("unauthorized"),
    },
)
async def logout(device: CurrentDevice, db: DbDep, notifier: NotifierDep) -> Response:
    await auth.logout(db, device.device_id)
    notifier.revoke((device.device_id,))
    return Response(status_code=204)


@router.get(
    "/devices",
    response_model=DevicesOut,
    operation_id="listDevices",
    tags=["devices"],
    summary="List the user's devices",
    responses=problem_responses("unauthorized"),
)
async def devices(device: CurrentDevice, db: DbDep) -> DevicesOut:
    rows = await auth.list_devices(db, device.user_id)
    return DevicesOut(
        devices=[
            DeviceOut(**row._asdict(), current=row.device_id == device.device_id) for row in rows
        ]
    )


@router.delete(
    "/devices/{device_id}",
    status_code=204,
    operation_id="deleteDevice",
    tags=["devices"],
    summary="Log out one of the user's devices",
    responses=problem_responses(
        "unauthorized", "bad_credentials", "device_not_found", "too_many_attempts", "server_busy"
    ),
)
async def delete_device(
    # Visible ASCII, as ids are hex: NUL and lone surrogates, which PostgreSQL cannot
    # compare, are a validation error on every backend rather than a database error.
    device_id: Annotated[
        str,
        Path(pattern=r"^[!-~]{1,32}$", description="The device to log out (see `GET /devices`)."),
    ],
    body: DeviceDeleteIn,
    request: Request,
    device: CurrentDevice,
    db: DbDep,
    passwords: PasswordsDep,
    notifier: NotifierDep,
) -> Response:
    """Log out one of the caller's devices (a lost phone, say), the way POST /logout does on
    that device: its token stops in every process, its waiting long-polls are answered 401
    and its pushers are removed. Needs the password re-entered."""
    await _confirm_password(request, db, passwords, device, body.password)
    # The password is checked first, so that without it nobody learns which ids exist.
    if not await auth.delete_device(db, device.user_id, device_id):
        raise AppError(404, "device_not_found", "you have no device with this id")
    # After the commit: a process re-reading the token must find it gone.
    notifier.revoke((device_id,))
    return Response(status_code=204)


@router.post(
    "/password",
    status_code=204,
    operation_id="changePassword",
    tags=["accounts"],
    summary="Change the password",
    responses=problem_responses(
        "unauthorized", "bad_credentials", "too_many_attempts", "server_busy"
    ),
)
async def change_password(
    body: PasswordChangeIn,
    request: Request,
    device: CurrentDevice,
    db: DbDep,
    passwords: PasswordsDep,
    notifier: NotifierDep,
) -> Response:
    """Change the password (the rules of registration); every other device of the user is
    logged out, as by DELETE /devices/{device_id}, unless `logout_other_devices` is false.
    The calling device stays logged in."""
    verified = await _confirm_password(request, db, passwords, device, body.old_password)
    ended = await auth.change_password(
        db,
        passwords,
        device.user_id,
        verified,
        body.new_password,
        keep_device=device.device_id if body.logout_other_devices else None,
    )
    if ended:
        notifier.revoke(ended)
    return Response(status_code=204)


async def _confirm_password(
    request: Request,
    db: Database,
    passwords: auth.Passwords,
    device: auth.DeviceContext,
    password: str,
) -> str:
    """The re-entered password of a signed-in user; returns the stored hash it matched.

    Attempts count against the calling device alone (app.accounts.throttle): a stolen token guessing
    the password here is slowed down on its own device, and failed logins by others never
    refuse the owner's devices their own password."""
    # Counted before the hash, as at login: a refused guess costs one statement.
    await throttle.attempt_password(db, device.device_id)
    verified = await auth.verify_password(db, passwords, device.user_id, password)
    if verified is None:
        log.info(
            "wrong password re-entered for user %r on device %s from %s",
            device.user_id,
            device.device_id,
            throttle.client_address(request.scope),
        )
        raise AppError(401, "bad_credentials", "wrong password")
    await throttle.password_succeeded(db, device.device_id)
    return verified
