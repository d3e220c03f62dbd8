"""Group messages, the log, read cursors and recall."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from app.errors import AppError
from app.groups import render
from app.groups.members import _not_found
from app.store.groups import Conflict, GroupStore

__all__ = ["Sent", "events", "mark_read", "recall", "send", "stored_send"]


@dataclass(frozen=True, slots=True)
class Sent:
    message: dict[str, Any]
    version: int
    members: list[str]  # to wake after commit; empty for a retry
    created: bool

    def body(self) -> bytes:
        return orjson.dumps({"message": self.message, "version": self.version})


async def stored_send(store: GroupStore, sender: str, client_msg_id: str) -> Sent | None:
    found = await store.existing_send(sender, client_msg_id)
    if found is None:
        return None
    return Sent(render.message(found[0]), found[1], [], created=False)


async def send(
    store: GroupStore,
    group_id: str,
    sender: str,
    body: str,
    client_msg_id: str | None,
    max_body_bytes: int,
    push_wait: float | None,
) -> Sent:
    if len(body.encode()) > max_body_bytes:
        raise AppError(
            413, "body_too_large", f"body is larger than {max_body_bytes} bytes of UTF-8"
        )
    try:
        sent = await store.send(group_id, sender, body, client_msg_id, push_wait)
    except Conflict:
        # A retry, or the same client_msg_id committed while we waited for the group's
        # lock: the unique key decided and nothing was written. Answer with the first.
        found = None if client_msg_id is None else await stored_send(store, sender, client_msg_id)
        if found is None:
            raise AppError(
                409,
                "client_msg_id_taken",
                "client_msg_id is taken by a direct message of the sender",
            ) from None
        return found
    if sent is None:
        raise _not_found(group_id)
    return Sent(sent.message, sent.version, sent.members, created=True)


async def events(
    store: GroupStore, group_id: str, user_id: str, after_seq: int | None, limit: int
) -> dict[str, Any]:
    """The log from after `after_seq`, never before the caller joined (joined_seq)."""
    found = await store.view(group_id, user_id)
    if found is None:
        raise _not_found(group_id)
    row, me = found
    start = me.joined_seq - 1
    after = start if after_seq is None else max(after_seq, start)
    rows = await store.events(group_id, after, limit)
    next_after = rows[-1].seq if rows else after
    # Events may have committed since the group was read: the latest is at least the last.
    latest = max(row.latest_seq, next_after)
    if me.news_seq is not None and next_after >= latest:
        # The read reached the end and the caller holds news: cover it, ordered against
        # any event in flight. An event committed meanwhile keeps the news and is read next
        # (has_more); one after the cover writes the caller a new group_news entry.
        latest = max(latest, await store.cover(group_id, user_id, next_after))
    return {
        "events": [render.event(r) for r in rows],
        "next_after_seq": next_after,
        "latest_seq": latest,
        "has_more": next_after < latest,
    }


async def mark_read(
    store: GroupStore, group_id: str, reader: str, up_to_seq: int
) -> tuple[dict[str, Any], bool]:
    """Move the reader's cursor (never back, never past the latest seq); a `read` entry for
    the reader's own devices when it moved. (answer, moved)"""
    found = await store.view(group_id, reader)
    if found is None:
        raise _not_found(group_id)
    up_to = min(up_to_seq, found[0].latest_seq)
    data = {"reader": reader, "group_id": group_id, "up_to_seq": up_to}
    result = await store.mark_read(group_id, reader, up_to, data)
    if result is None:
        raise _not_found(group_id)
    read_seq, version, moved = result
    return {"group_id": group_id, "read_seq": read_seq, "version": version}, moved


@dataclass(frozen=True, slots=True)
class Recalled:
    message: dict[str, Any]
    woken: list[str]


async def recall(
    store: GroupStore, user_id: str, message_id: int, window_seconds: int
) -> Recalled | None:
    """Recall a group message (an event of the group); None when it is not a group message."""
    found = await store.message(message_id)
    if found is None:
        return None
    if await store.view(found.group_id, user_id) is None:
        # Not a member (any more): the message is not the caller's to see.
        raise AppError(404, "message_not_found", f"no message {message_id}")
    if found.sender != user_id:
        raise AppError(403, "not_sender", "only the sender can recall a message")
    if found.recalled_at is not None:
        return Recalled(render.message(found), [])
    async with store.work() as work:
        row = await work.lock(found.group_id)
        if row is None or await work.member(user_id) is None:
            raise AppError(404, "message_not_found", f"no message {message_id}")
        # The clock is read under the lock: a recall that waited is judged by when it acts.
        now = await work.now()
        if now >= found.created_at + timedelta(seconds=window_seconds):
            raise AppError(
                409,
                "recall_window_passed",
                f"a message can be recalled only within {window_seconds} seconds of sending",
            )
        # Small: a recall entry for every member; large: group_news for those holding none.
        members = [] if row.large else [m.user_id for m in await work.members()]
        await work.lock_users(members, news=row.large)
        recalled_at = await work.recall(message_id)
        if recalled_at is None:
            # A concurrent recall committed first (it held this group's lock): a retry.
            await work.rollback()
            again = await store.message(message_id)
            assert again is not None
            return Recalled(render.message(again), [])
        data = render.message(
            type(found)(
                found.id,
                found.sender,
                "",
                found.client_msg_id,
                found.created_at,
                recalled_at,
                found.group_id,
                found.seq,
            )
        )
        # The logged message shows the recall to whoever reads the log later.
        await work.set_event_data(found.seq, data)
        entry = {
            "message_id": message_id,
            "from": user_id,
            "to": None,
            "group_id": found.group_id,
        }
        appended = await work.append_event(
            "recall",
            user_id,
            {"message_id": message_id},
            members,
            message_id=message_id,
            entry=entry,
            news=row.large,
        )
    return Recalled(data, [*members, *appended.noticed])
