"""Creating a group and changing its members, title and roles: each change an event.

Every change runs in one GroupWork (app.store.groups): the group's lock first, then every
user concerned locked in user-id order before the first event (so that a change made of
several events, such as adding many members, never takes a user's lock out of order), then
member rows.

A group is large while it has more than MSGSYNC_GROUP_FANOUT_LIMIT members; an event takes
the mode the group has once the change is made (so the change that crosses the limit is the
first event of the new mode). Small: the event is written to every member's stream. Large:
to the member concerned alone (the one added, removed or leaving), and the others learn of
it through group_news (`news=True`); nothing reads or locks every member. Switching loses
nothing: a member who held news when the group became small reads the log as well as its
entries (clients skip an event at or below their position), and a member whose news a read
covered in small mode gets news again from the first large event.
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
    return settings.group_max_members


def _large(settings: Settings, member_count: int) -> bool:
    return member_count > settings.group_fanout_limit


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
    # Every member is concerned by `created` (each is added by it), so each gets it, large
    # or not; having every event so far, they hold no news (news_seq NULL).
    large = _large(settings, len(everyone))
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
            await work.update_group(
                title=title, owner=creator, member_count=len(everyone), large=large
            )
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
        large,
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


async def _to_everyone(
    work: GroupWork,
    large: bool,
    kind: str,
    actor: str,
    data: dict[str, Any],
    concerned: list[str],
) -> list[str]:
    """An event for every member: written to each (small), or to `concerned` alone with
    group_news for the others (large). Who has news, to wake after commit."""
    if large:
        await work.lock_users(concerned, news=True)
        appended = await work.append_event(kind, actor, data, concerned, news=True)
        return sorted({*concerned, *appended.noticed})
    everyone = sorted({*(m.user_id for m in await work.members()), *concerned})
    await work.lock_users(everyone)
    await work.append_event(kind, actor, data, everyone)
    return everyone


async def rename(store: GroupStore, actor: str, group_id: str, title: str) -> Changed:
    async with store.work() as work:
        row, me = await _locked_member(work, group_id, actor)
        _manager(me)
        woken = await _to_everyone(work, row.large, "title_changed", actor, {"title": title}, [])
        await work.update_group(
            title=title, owner=row.owner, member_count=row.member_count, large=row.large
        )
    renamed = GroupRow(
        row.group_id,
        title,
        row.owner,
        row.creator,
        row.client_group_id,
        row.latest_seq + 1,
        row.member_count,
        row.large,
        row.created_at,
    )
    return Changed({"group": render.group(renamed, me)}, woken)


async def add_members(
    store: GroupStore, settings: Settings, actor: str, group_id: str, user_ids: list[str]
) -> Changed:
    """One `member_added` event per member added. Which of the ids are members already is
    one query and the count is the group's counter: a batch of 1,000 into a group of
    100,000 reads and locks the 1,000 (and, large, the members getting news), not the
    group."""
    async with store.work() as work:
        row, me = await _locked_member(work, group_id, actor)
        _manager(me)
        added = sorted(set(user_ids) - await work.members_among(user_ids))
        count = row.member_count + len(added)
        if count > group_limit(settings):
            raise _too_large(group_limit(settings))
        await _missing_users(work, added)
        large = _large(settings, count)
        seq = row.latest_seq
        woken: set[str] = set(added)
        if large and added:
            await work.lock_users(added, news=True)
            # Each joins at its own event, which it gets in its stream (a device learns it
            # joined); the next event (the batch's next member_added, or any later one)
            # gives it news, at a seq above its position, so a client reads the log. (News
            # at the seq it joined at would be at its position: never read, never covered,
            # and no later event would signal it.)
            woken.update(await work.add_large(actor, added, seq + 1))
            seq += len(added)
        elif added:
            present = [m.user_id for m in await work.members()]
            everyone = sorted({*present, *added})
            await work.lock_users(everyone)
            recipients = set(present)
            woken.update(everyone)
            for user in added:
                # One event per member added; the one added gets it too, so a device learns
                # it joined. The member's history starts at that event (joined_seq).
                seq += 1
                await work.add_members([MemberRow(user, "member", seq, seq)])
                recipients.add(user)
                appended = await work.append_event(
                    "member_added", actor, {"user_id": user}, recipients
                )
                assert appended.seq == seq
        await work.update_group(title=row.title, owner=row.owner, member_count=count, large=large)
    grown = GroupRow(
        row.group_id,
        row.title,
        row.owner,
        row.creator,
        row.client_group_id,
        seq,
        count,
        large,
        row.created_at,
    )
    return Changed({"group": render.group(grown, me)}, sorted(woken) if added else [])


async def remove_member(
    store: GroupStore, settings: Settings, actor: str, group_id: str, user_id: str
) -> Changed:
    """Leave (oneself) or remove another (the owner and admins; never the owner). When the
    owner leaves, the longest-standing admin, else member, becomes owner."""
    async with store.work() as work:
        row, me = await _locked_member(work, group_id, actor)
        leaving = user_id == actor
        if not leaving:
            _manager(me)
        target = me if leaving else await work.member(user_id)
        if target is None:
            return Changed({}, [])  # not (or no longer) a member: nothing to do
        if not leaving and target.role == "owner":
            raise AppError(403, "not_group_admin", "the owner cannot be removed")
        count = row.member_count - 1
        large = _large(settings, count)
        # The one leaving or removed gets the event too, and nothing after it.
        woken = await _to_everyone(
            work,
            large,
            "member_left" if leaving else "member_removed",
            actor,
            {"user_id": user_id},
            [user_id],
        )
        await work.delete_member(user_id)
        owner = row.owner
        if target.role == "owner":
            heir = await work.heir(user_id)
            owner = heir.user_id if heir is not None else None
            if heir is not None:
                woken = sorted(
                    {
                        *woken,
                        *await _to_everyone(
                            work,
                            large,
                            "role_changed",
                            actor,
                            {"user_id": heir.user_id, "role": "owner"},
                            [],
                        ),
                    }
                )
                # After the event: the users' locks come before member rows'.
                await work.set_role(heir.user_id, "owner")
        await work.update_group(title=row.title, owner=owner, member_count=count, large=large)
    return Changed({}, woken)


async def set_role(
    store: GroupStore, actor: str, group_id: str, user_id: str, role: str
) -> Changed:
    async with store.work() as work:
        row, me = await _locked_member(work, group_id, actor)
        if me.role != "owner":
            raise AppError(403, "not_group_admin", "only the owner changes roles")
        if user_id == actor:
            raise AppError(403, "not_group_admin", "the owner hands the group over by leaving it")
        target = await work.member(user_id)
        if target is None:
            raise AppError(404, "user_not_found", f"{user_id!r} is not a member", user_id=user_id)
        if target.role == role:
            return Changed({"user_id": user_id, "role": role}, [])
        woken = await _to_everyone(
            work, row.large, "role_changed", actor, {"user_id": user_id, "role": role}, []
        )
        # After the event: the users' locks come before member rows'.
        await work.set_role(user_id, role)
    return Changed({"user_id": user_id, "role": role}, woken)
