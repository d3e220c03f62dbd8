"""A member's device following its groups as docs/client-algorithm.md ("Groups") tells a
client to: an event from the stream advances the group's log position when it is the next
one and no news is pending, else it raises the news mark; a `group_news` entry raises the
mark; after each page, a group whose mark is above its position is read from the log, from
that position until `has_more` is false. An event at or below the position is skipped."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.factories import Device


@dataclass
class Follower:
    client: httpx.AsyncClient
    device: Device
    since: int = 0
    position: dict[str, int] = field(default_factory=dict)
    news_seq: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Every position the group's log reached, in order: what the user has seen.
    seen: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    # Every event the log answered, repeats included (a read from the position has none).
    read: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    news: int = 0  # group_news entries received
    gone: set[str] = field(default_factory=set)

    async def sync(self, timeout: float = 0, limit: int = 100) -> dict[str, Any]:
        """One page of the stream, every entry applied, then the logs with news read; the
        page."""
        response = await self.client.get(
            "/sync",
            params={"since": self.since, "limit": limit, "timeout": timeout},
            headers=self.device.headers,
            timeout=timeout + 30,
        )
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        for entry in page["entries"]:
            self.apply(entry)
        self.since = page["next_since"]
        for group_id in list(self.news_seq):
            if group_id not in self.gone and self.news_seq[group_id] > self.position.get(
                group_id, 0
            ):
                await self.read_log(group_id)
        return page

    async def catch_up(self) -> None:
        """Every entry there is now, applied."""
        while (await self.sync())["has_more"]:
            pass

    def apply(self, entry: dict[str, Any]) -> None:
        kind, data = entry["kind"], entry["data"]
        if kind == "group":
            event = data["event"]
            mine = event["kind"] == "created" or (
                event["kind"] == "member_added" and event["data"]["user_id"] == self.device.user_id
            )
            if data["group_id"] not in self.position and mine:
                self.position[data["group_id"]] = event["seq"] - 1
                self.gone.discard(data["group_id"])
            self._event(data["group_id"], event["seq"])
            leaving = event["kind"] in ("member_removed", "member_left")
            if leaving and event["data"]["user_id"] == self.device.user_id:
                self.gone.add(data["group_id"])
        elif kind in ("message", "recall") and data.get("group_id") is not None:
            self._event(data["group_id"], data["seq"])
        elif kind == "group_news":
            self.news += 1
            group_id = data["group_id"]
            self.news_seq[group_id] = max(self.news_seq[group_id], data["seq"])

    def _event(self, group_id: str, seq: int) -> None:
        position = self.position.get(group_id, 0)
        if seq <= position:
            return  # applied already (from the log): never twice
        if seq == position + 1 and self.news_seq[group_id] <= position:
            self.position[group_id] = seq
            self.seen[group_id].append(seq)
        else:
            self.news_seq[group_id] = max(self.news_seq[group_id], seq)  # a gap below it

    async def read_log(self, group_id: str) -> None:
        while True:
            params: dict[str, Any] = {"limit": 7}
            if self.position.get(group_id, 0):
                params["after_seq"] = self.position[group_id]
            response = await self.client.get(
                f"/groups/{group_id}/events", params=params, headers=self.device.headers
            )
            if response.status_code == 404:
                self.gone.add(group_id)  # no longer a member: the group shows nothing more
                return
            assert response.status_code == 200, response.text
            page = response.json()
            for event in page["events"]:
                self.read[group_id].append(event["seq"])
                if event["seq"] > self.position.get(group_id, 0):
                    self.position[group_id] = event["seq"]
                    self.seen[group_id].append(event["seq"])
            self.position[group_id] = max(self.position.get(group_id, 0), page["next_after_seq"])
            if not page["has_more"]:
                return
