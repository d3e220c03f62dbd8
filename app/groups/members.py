"""Creating a group and changing its members, title and roles: each change an event.

Every change runs in one GroupWork (app.store.groups): the group's lock first, then every
user concerned locked in user-id order before the first event (so that a change made of
several events, such as adding many members, never takes a user's lock out of order), then
member rows.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from app.errors import AppError
from app.groups import render
from app.store.groups import Conflict, GroupRow, GroupStore, GroupWork, MemberRow

__all__ = [
    "Changed",
    "add_members",
    "create_group",
    "page",
    "remove_member",
    "rename",
    "set_role",
]

MANAGERS = frozenset({"owner", "admin"})


@dataclass(frozen=True, slots=True)
class Changed:
    """The answer's body, and who has news (to wake after commit)."""

    body: dict[str, Any]
    woken: list[str]
    created: bool = True


def group_limit(settings: Settings) -> int:
    # Until large groups exist, a group may not outgrow write fan-out.
    return min(settings.group_fanout_limit, settings.group_max_members)


def _too_large(limit: int) -> AppError:
    return AppError(409, "group_too_large", f"a group has at most {limit} members")


def _not_found(group_id: str) -> AppError:
    # The same answer for "no such group" and "not a member": never reveal that it exists.
    return AppError(404, "group_not_found", f"no group {group_id!r}")


async def _locked_member(
    work: GroupWork, group_id: str, user_id: str
) -> tuple[GroupRow, MemberRow]:
    row = await work.lock(group_id)
    me = None if row is None else await work.member(user_id)
    if row is None or me is None:
        raise _not_found(group_id)
    return row, me


def _manager(me: MemberRow) -> None:
    if me.role not in MANAGERS:
        raise AppError(403, "not_group_admin", "only the owner and admins can do this")


async def _missing_users(work: GroupWork, user_ids: Iterable[str]) -> None:
    wanted = set(user_ids)
    missing = sorted(wanted - await work.existing_users(wanted))
    if missing:
        raise AppError(404, "user_not_found", f"no user {missing[0]!r}", user_id=missing[0])


async def create_group(
    store: GroupStore,
    settings: Settings,
    creator: str,
    title: str,
    members: list[str],
    client_group_id: str | None,
) -> Changed:
    if client_group_id is not None:
        found = await store.find_created(creator, client_group_id)
        if found is not None:
            return await _created_before(store, creator, found)
    everyone = sorted({creator, *members})
    if len(everyone) > group_limit(settings):
        raise _too_large(group_limit(settings))
    try:
        async with store.work() as work:
            await _missing_users(work, everyone)
            row = await work.create("g" + secrets.token_hex(10), title, creator, client_group_id)
            await work.lock_users(everyone)
            # The `created` event takes seq 1: everyone joined there and has read it.
            await work.add_members(
                [
                    MemberRow(user, "owner" if user == creator else "member", 1, 1)
                    for user in everyone
                ]
            )
            appended = await work.append_event(
                "created", creator, {"title": title, "members": everyone}, everyone
            )
            await work.update_group(title=title, owner=creator, member_count=len(everyone))
    except Conflict:
        # The same client_group_id committed while we worked: answer with the first group.
        assert client_group_id is not None
        found = await store.find_created(creator, client_group_id)
        if found is None:
            raise
        return await _created_before(store, creator, found)
    created = GroupRow(
        row.group_id,
        title,
        creator,
        creator,
        client_group_id,
        appended.seq,
        len(everyone),
        False,
        row.created_at,
    )
    me = MemberRow(creator, "owner", 1, 1)
    body = {"group": render.group(created, me), "version": appended.versions[creator]}
    return Changed(body, everyone)


async def _created_before(store: GroupStore, creator: str, group_id: str) -> Changed:
    found = await store.view(group_id, creator)
    if found is None:
        # The creator has left the group it made: the retry cannot show it any more.
        raise _not_found(group_id)
    version = await store.latest_version(creator)
    return Changed({"group": render.group(*found), "version": version}, [], created=False)


async def view(store: GroupStore, group_id: str, user_id: str) -> dict[str, Any]:
    found = await store.view(group_id, user_id)
    if found is None:
        raise _not_found(group_id)
    return {"group": render.group(*found)}


async def page(
    store: GroupStore, group_id: str, user_id: str, after: str | None, limit: int
) -> dict[str, Any]:
    """A page of the members, by user id; for members only."""
    if await store.view(group_id, user_id) is None:
        raise _not_found(group_id)
    rows = await store.members(group_id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "members": [render.member(r) for r in rows],
        "next_after": rows[-1].user_id if more else None,
    }


async def rename(store: GroupStore, actor: str, group_id: str, title: str) -> Changed:
    async with store.work() as work:
        row, me = await _locked_member(work, group_id, actor)
        _manager(me)
        members = [m.user_id for m in await work.members()]
        await work.lock_users(members)
        appended = await work.append_event("title_changed", actor, {"title": title}, members)
        await work.update_group(title=title, owner=row.owner, member_count=row.member_count)
    renamed = GroupRow(
        row.group_id,
        title,
        row.owner,
        row.creator,
        row.client_group_id,
        appended.seq,
        row.member_count,
        row.large,
        row.created_at,
    )
    return Changed({"group": render.group(renamed, me)}, members)


async def add_members(
    store: GroupStore, settings: Settings, actor: str, group_id: str, user_ids: list[str]
) -> Changed:
    async with store.work() as work:
        row, me = await _locked_member(work, group_id, actor)
        _manager(me)
        present = {m.user_id for m in await work.members()}
        added = sorted(set(user_ids) - present)
        if len(present) + len(added) > group_limit(settings):
            raise _too_large(group_limit(settings))
        await _missing_users(work, added)
        everyone = sorted(present | set(added))
        await work.lock_users(everyone)
        seq = row.latest_seq
        recipients = set(present)
        for user in added:
            # One event per member added; the one added gets it too, so a device learns
            # it joined. The member's history starts at that event (joined_seq).
            seq += 1
            await work.add_members([MemberRow(user, "member", seq, seq)])
            recipients.add(user)
            appended = await work.append_event("member_added", actor, {"user_id": user}, recipients)
            assert appended.seq == seq
        await work.update_group(title=row.title, owner=row.owner, member_count=len(everyone))
    grown = GroupRow(
        row.group_id,
        row.title,
        row.owner,
        row.creator,
        row.client_group_id,
        seq,
        len(everyone),
        row.large,
        row.created_at,
    )
    return Changed({"group": render.group(grown, me)}, everyone if added else [])


async def remove_member(store: GroupStore, actor: str, group_id: str, user_id: str) -> Changed:
    """Leave (oneself) or remove another (the owner and admins; never the owner). When the
    owner leaves, the longest-standing admin, else member, becomes owner."""
    async with store.work() as work:
        row, me = await _locked_member(work, group_id, actor)
        leaving = user_id == actor
        if not leaving:
            _manager(me)
        members = await work.members()
        target = next((m for m in members if m.user_id == user_id), None)
        if target is None:
            return Changed({}, [])  # not (or no longer) a member: nothing to do
        if not leaving and target.role == "owner":
            raise AppError(403, "not_group_admin", "the owner cannot be removed")
        everyone = [m.user_id for m in members]
        await work.lock_users(everyone)
        # The one leaving or removed gets the event too, and nothing after it.
        await work.append_event(
            "member_left" if leaving else "member_removed",
            actor,
            {"user_id": user_id},
            everyone,
        )
        await work.delete_member(user_id)
        remaining = [m for m in members if m.user_id != user_id]
        owner = row.owner
        if target.role == "owner":
            heir = _heir(remaining)
            owner = heir.user_id if heir is not None else None
            if heir is not None:
                await work.set_role(heir.user_id, "owner")
                await work.append_event(
                    "role_changed",
                    actor,
                    {"user_id": heir.user_id, "role": "owner"},
                    [m.user_id for m in remaining],
                )
        await work.update_group(title=row.title, owner=owner, member_count=len(remaining))
    return Changed({}, everyone)


def _heir(remaining: list[MemberRow]) -> MemberRow | None:
    """The longest-standing admin, else the longest-standing member (ties: by user id)."""
    for roles in ({"admin"}, {"member"}):
        candidates = [m for m in remaining if m.role in roles]
        if candidates:
            return min(candidates, key=lambda m: (m.joined_seq, m.user_id))
    return None


async def set_role(
    store: GroupStore, actor: str, group_id: str, user_id: str, role: str
) -> Changed:
    async with store.work() as work:
        _, me = await _locked_member(work, group_id, actor)
        if me.role != "owner":
            raise AppError(403, "not_group_admin", "only the owner changes roles")
        if user_id == actor:
            raise AppError(403, "not_group_admin", "the owner hands the group over by leaving it")
        members = await work.members()
        target = next((m for m in members if m.user_id == user_id), None)
        if target is None:
            raise AppError(404, "user_not_found", f"{user_id!r} is not a member", user_id=user_id)
        if target.role == role:
            return Changed({"user_id": user_id, "role": role}, [])
        everyone = [m.user_id for m in members]
        await work.lock_users(everyone)
        await work.set_role(user_id, role)
        await work.append_event("role_changed", actor, {"user_id": user_id, "role": role}, everyone)
    return Changed({"user_id": user_id, "role": role}, everyone)
