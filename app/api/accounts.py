"""Accounts and devices."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app import auth
from app.api.deps import CurrentDevice, DbDep, NotifierDep, PasswordsDep
from app.openapi import problem_responses
from app.schemas import DeviceOut, DevicesOut, LoginIn, LoginOut, UserIn, UserOut

router = APIRouter(tags=["accounts"])


@router.post(
    "/users",
    status_code=201,
    response_model=UserOut,
    operation_id="create_user",
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
        **problem_responses("user_exists"),
    },
)
async def create_user(body: UserIn, db: DbDep, passwords: PasswordsDep) -> UserOut:
    await auth.create_user(db, passwords, body.user_id, body.password)
    return UserOut(user_id=body.user_id)


@router.post(
    "/login",
    status_code=201,
    response_model=LoginOut,
    operation_id="login",
    summary="Log in a new device",
    responses={
        201: {"description": "A new device and its token."},
        **problem_responses("bad_credentials"),
    },
)
async def login(body: LoginIn, db: DbDep, passwords: PasswordsDep) -> LoginOut:
    device_id, token = await auth.login(
        db, passwords, body.user_id, body.password, body.device_name
    )
    return LoginOut(user_id=body.user_id, device_id=device_id, access_token=token)


@router.post(
    "/logout",
    status_code=204,
    operation_id="logout",
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
    operation_id="list_devices",
    summary="List the user's devices",
    responses=problem_responses("unauthorized"),
)
async def devices(device: CurrentDevice, db: DbDep) -> DevicesOut:
    rows = await auth.list_devices(db, device.user_id)
    return DevicesOut(devices=[DeviceOut.model_validate(row, from_attributes=True) for row in rows])
