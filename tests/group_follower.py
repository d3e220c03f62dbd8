"""A member's device following its groups exactly as a client must (DESIGN.md "Groups"):
events arrive as stream entries (small groups, and membership events) or are read from the
log on each `group_news` entry, from the device's own last seen seq until `has_more` is
false; an event at or below that position is skipped."""

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
    # Every event applied, in the order applied (seqs): what the user sees.
    seen: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    # Every event the log answered, repeats included: a reader starting from its position
    # never reads one twice.
    read: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    news: int = 0  # group_news entries received

    async def sync(self, timeout: float = 0, limit: int = 100) -> dict[str, Any]:
        """One page of the stream, every entry applied; the page."""
        response = await self.client.get(
            "/sync",
            params={"since": self.since, "limit": limit, "timeout": timeout},
            headers=self.device.headers,
            timeout=timeout + 30,
        )
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        for entry in page["entries"]:
            await self.apply(entry)
        self.since = page["next_since"]
        return page

    async def catch_up(self) -> None:
        """Every entry there is now, applied."""
        while (await self.sync())["has_more"]:
            pass

    async def apply(self, entry: dict[str, Any]) -> None:
        kind, data = entry["kind"], entry["data"]
        if kind == "group":
            self._saw(data["group_id"], data["event"]["seq"])
        elif kind in ("message", "recall") and data.get("group_id") is not None:
            self._saw(data["group_id"], data["seq"])
        elif kind == "group_news":
            self.news += 1
            await self.read_log(data["group_id"])

    async def read_log(self, group_id: str) -> None:
        while True:
            params: dict[str, Any] = {"limit": 7}
            if group_id in self.position:
                params["after_seq"] = self.position[group_id]
            response = await self.client.get(
                f"/groups/{group_id}/events", params=params, headers=self.device.headers
            )
            if response.status_code == 404:
                return  # no longer a member: the group shows nothing more
            assert response.status_code == 200, response.text
            page = response.json()
            for event in page["events"]:
                self.read[group_id].append(event["seq"])
                self._saw(group_id, event["seq"])
            if not page["has_more"]:
                return

    def _saw(self, group_id: str, seq: int) -> None:
        if seq <= self.position.get(group_id, 0):
            return  # had it already (from the log, or as an entry)
        self.seen[group_id].append(seq)
        self.position[group_id] = seq
