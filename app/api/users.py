"""Looking a user up: whether an id names an account, before anything is sent to it.

It tells a signed-in caller nothing new: POST /users answers 409 `user_exists` and
POST /messages 404 `recipient_not_found` for the same ids. What it spares is the message: a
client can say "there is no such user" when a conversation is opened, instead of after its
first message failed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.accounts import auth
from app.api.deps import CurrentDevice, DbDep
from app.errors import AppError
from app.openapi import problem_responses
from app.schemas import USER_ID_PATTERN, UserFound

router = APIRouter()


@router.get(
    "/users/{user_id}",
    response_model=UserFound,
    operation_id="getUser",
    tags=["accounts"],
    summary="Tell whether a user exists",
    responses={
        200: {"description": "The user exists."},
        **problem_responses("unauthorized", "user_not_found"),
    },
)
async def get_user(
    # Registration's rule for ids: one no account can have is a 422, as it is there.
    user_id: Annotated[
        str,
        Path(
            pattern=USER_ID_PATTERN,
            description="The user id to look up: lower-case letters, digits, `.`, `_`, `-`; "
            "1 to 64.",
            examples=["bob"],
        ),
    ],
    device: CurrentDevice,
    db: DbDep,
) -> UserFound:
    """Whether an account has this id, for a client about to open a conversation with it:
    200 when it has, 404 `user_not_found` when it has not (a message to it would be refused
    with `recipient_not_found`)."""
    if not await auth.user_exists(db, user_id):
        raise AppError(404, "user_not_found", f"no user {user_id!r}")
    return UserFound(user_id=user_id)
