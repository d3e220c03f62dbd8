"""What a member reads across groups: the conversation list with groups in it, and the
groups' news at the end of a pruned range of the stream (the sync fallback)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from app.db.models import utcnow
from app.groups import render
from app.inbox.sync import FetchedEntry, Page
from app.store.groups import GroupStore
from app.store.inbox import InboxStore, derived_entry_id

__all__ = ["conversations", "with_group_news"]


async def conversations(
    inbox: InboxStore, store: GroupStore, user_id: str, limit: int, before: int | None
) -> dict[str, Any]:
    """Direct conversations and groups together, newest message first, keyset-paged on the
    last message's id (message ids are one sequence for both, so the two lists merge)."""
    direct = await inbox.conversations(user_id, limit, before)
    groups = await store.conversations(user_id, before, limit + 1)
    items: list[dict[str, Any]] = list(direct["conversations"])
    items += [
        {
            "kind": "group",
            "group_id": g.group_id,
            "title": g.title,
            "last_message": render.message(g.last_message),
            "unread_count": g.unread_count,
        }
        for g in groups
    ]
    items.sort(key=lambda c: c["last_message"]["id"], reverse=True)
    # More below this page: items beyond it here, or direct ones beyond what was fetched.
    more = len(items) > limit or direct["next_before"] is not None
    page = items[:limit]
    return {
        "conversations": page,
        "next_before": page[-1]["last_message"]["id"] if more and page else None,
    }


def _news_id(user_id: str, floor: int, group_id: str, seq: int) -> str:
    """The entry id of a news entry made at a sync below the floor: the same on every
    re-read of that range, and never a drawn id (hex) nor a history id (`h`). The floor's
    version is never checked against `since_id` (at or below the floor), so its only duty
    is to be an id."""
    return derived_entry_id("n", user_id, str(floor), group_id, str(seq))


async def with_group_news(store: GroupStore, user_id: str, page: Page) -> Page:
    """At the end of a pruned range, a `group_news` entry for each of the user's groups:
    their events in that range were pruned from the stream with it, so the client reads
    their logs. (Every group of the user is named: more than needed is allowed, never
    fewer.) They take the floor's version, between the range and the entries above it."""
    floor = page.pruned_through
    if floor is None:
        return page
    groups = await store.groups_of(user_id)
    if not groups:
        return page
    news = [
        FetchedEntry(
            floor,
            "group_news",
            utcnow(),
            orjson.dumps({"group_id": group_id, "seq": seq}).decode(),
            _news_id(user_id, floor, group_id, seq),
        )
        for group_id, seq in groups
    ]
    below = [e for e in page.entries if e.version <= floor]
    above = [e for e in page.entries if e.version > floor]
    return replace(page, entries=[*below, *news, *above])
