"""Group conversations: HTTP only; the rules are in app.groups."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from app.api.deps import CurrentDevice, NotifierDep, SettingsDep, StoreDep
from app.groups import members, messages
from app.groups.send import deliver
from app.openapi import problem_responses
from app.schemas import (
    GROUP_ID_MAX_LENGTH,
    MAX_ID,
    NO_NUL,
    GroupBody,
    GroupCreated,
    GroupEventsPage,
    GroupIn,
    GroupReadIn,
    GroupReadOut,
    GroupSendIn,
    GroupTitleIn,
    MembersIn,
    MembersPage,
    RoleIn,
    RoleOut,
    SendOut,
)

router = APIRouter(tags=["groups"])

GroupId = Annotated[
    str,
    Path(
        max_length=GROUP_ID_MAX_LENGTH,
        pattern=NO_NUL,
        description="The group's id.",
        examples=["g1f2e"],
    ),
]
UserPath = Annotated[
    str, Path(max_length=64, pattern=NO_NUL, description="A member's user id.", examples=["bob"])
]


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.post(
    "/groups",
    status_code=201,
    response_model=GroupCreated,
    operation_id="createGroup",
    summary="Create a group (the caller is its owner)",
    responses={
        200: {"model": GroupCreated, "description": "A retry with the same `client_group_id`."},
        # group_not_found: a retry after the creator left the group it made.
        **problem_responses("unauthorized", "user_not_found", "group_too_large", "group_not_found"),
    },
)
async def create(
    body: GroupIn,
    device: CurrentDevice,
    store: StoreDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> Response:
    changed = await members.create_group(
        store.groups, settings, device.user_id, body.title, body.members, body.client_group_id
    )
    if changed.woken:
        notifier.notify(changed.woken)  # after commit, as for a direct send
    return _json(changed.body, 201 if changed.created else 200)


@router.get(
    "/groups/{group_id}",
    response_model=GroupBody,
    operation_id="getGroup",
    summary="A group as the caller sees it",
    responses=problem_responses("unauthorized", "group_not_found"),
)
async def get(group_id: GroupId, device: CurrentDevice, store: StoreDep) -> Response:
    return _json(await members.view(store.groups, group_id, device.user_id))


@router.patch(
    "/groups/{group_id}",
    response_model=GroupBody,
    operation_id="renameGroup",
    summary="Change the group's title (the owner and admins)",
    responses=problem_responses("unauthorized", "group_not_found", "not_group_admin"),
)
async def rename(
    group_id: GroupId,
    body: GroupTitleIn,
    device: CurrentDevice,
    store: StoreDep,
    notifier: NotifierDep,
) -> Response:
    changed = await members.rename(store.groups, device.user_id, group_id, body.title)
    notifier.notify(changed.woken)
    return _json(changed.body)


@router.get(
    "/groups/{group_id}/members",
    response_model=MembersPage,
    operation_id="listGroupMembers",
    summary="The group's members, by user id",
    responses=problem_responses("unauthorized", "group_not_found"),
)
async def list_members(
    group_id: GroupId,
    device: CurrentDevice,
    store: StoreDep,
    after: Annotated[
        str | None,
        Query(max_length=64, pattern=NO_NUL, description="The previous page's `next_after`."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Members per page.")] = 100,
) -> Response:
    return _json(await members.page(store.groups, group_id, device.user_id, after, limit))


@router.post(
    "/groups/{group_id}/members",
    response_model=GroupBody,
    operation_id="addGroupMembers",
    summary="Add members (the owner and admins); members already in are ignored",
    responses=problem_responses(
        "unauthorized", "group_not_found", "not_group_admin", "user_not_found", "group_too_large"
    ),
)
async def add(
    group_id: GroupId,
    body: MembersIn,
    device: CurrentDevice,
    store: StoreDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> Response:
    changed = await members.add_members(
        store.groups, settings, device.user_id, group_id, body.user_ids
    )
    notifier.notify(changed.woken)
    return _json(changed.body)


@router.delete(
    "/groups/{group_id}/members/{user_id}",
    status_code=204,
    operation_id="removeGroupMember",
    summary="Leave (oneself) or remove a member (the owner and admins; never the owner)",
    responses=problem_responses("unauthorized", "group_not_found", "not_group_admin"),
)
async def remove(
    group_id: GroupId,
    user_id: UserPath,
    device: CurrentDevice,
    store: StoreDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> Response:
    changed = await members.remove_member(store.groups, settings, device.user_id, group_id, user_id)
    notifier.notify(changed.woken)
    return Response(status_code=204)


@router.patch(
    "/groups/{group_id}/members/{user_id}",
    response_model=RoleOut,
    operation_id="setGroupRole",
    summary="Change a member's role (the owner only)",
    responses=problem_responses(
        "unauthorized", "group_not_found", "not_group_admin", "user_not_found"
    ),
)
async def role(
    group_id: GroupId,
    user_id: UserPath,
    body: RoleIn,
    device: CurrentDevice,
    store: StoreDep,
    notifier: NotifierDep,
) -> Response:
    changed = await members.set_role(store.groups, device.user_id, group_id, user_id, body.role)
    notifier.notify(changed.woken)
    return _json(changed.body)


@router.post(
    "/groups/{group_id}/messages",
    status_code=201,
    response_model=SendOut,
    operation_id="sendGroupMessage",
    summary="Send a message to a group",
    responses={
        200: {"model": SendOut, "description": "A retry with the same `client_msg_id`."},
        **problem_responses(
            "unauthorized",
            "group_not_found",
            "body_too_large",
            "too_many_requests",
            "client_msg_id_taken",
        ),
    },
)
async def send(
    request: Request,
    group_id: GroupId,
    body: GroupSendIn,
    device: CurrentDevice,
    store: StoreDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> Response:
    # The edge answers a plain send itself (app.edge.hotpaths) through the same function.
    status, content = await deliver(
        store, notifier, settings, request.app.state.send_rate, device, group_id, body
    )
    return Response(content, status_code=status, media_type="application/json")


@router.get(
    "/groups/{group_id}/events",
    response_model=GroupEventsPage,
    operation_id="listGroupEvents",
    summary="The group log from after a seq (never before the caller joined)",
    responses=problem_responses("unauthorized", "group_not_found"),
)
async def events(
    group_id: GroupId,
    device: CurrentDevice,
    store: StoreDep,
    after_seq: Annotated[
        int | None,
        Query(ge=0, le=MAX_ID, description="Events after this seq; absent: from joined_seq."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Events per page.")] = 100,
) -> Response:
    return _json(await messages.events(store.groups, group_id, device.user_id, after_seq, limit))


@router.post(
    "/groups/{group_id}/read",
    response_model=GroupReadOut,
    operation_id="markGroupRead",
    summary="Move the caller's read cursor in the group forward",
    responses=problem_responses("unauthorized", "group_not_found"),
)
async def read(
    group_id: GroupId,
    body: GroupReadIn,
    device: CurrentDevice,
    store: StoreDep,
    notifier: NotifierDep,
) -> Response:
    answer, moved = await messages.mark_read(store.groups, group_id, device.user_id, body.up_to_seq)
    if moved:
        notifier.notify([device.user_id])  # the reader's other devices
    return _json(answer)
