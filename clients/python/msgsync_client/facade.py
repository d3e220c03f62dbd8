"""A blocking facade over the async Client, for scripts and REPLs.

Each call runs the async client on a private event loop. The delayed-ack timer only runs
during calls, so `close()` (or the `with` block's end) sends the last ack."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from msgsync_client.client import Client, Handlers, Options, SyncResult
from msgsync_client.models import Group, GroupMember, Message, OutboxItem, Session
from msgsync_client.store import Store

__all__ = ["SyncClient"]

T = TypeVar("T")


class SyncClient:
    def __init__(
        self,
        store: Store,
        server: str | None = None,
        options: Options | None = None,
        handlers: Handlers | None = None,
    ) -> None:
        self._runner = asyncio.Runner()
        # httpx binds its pool to the loop that first uses it: build the client inside it.
        self.client = self._run(self._make(store, server, options, handlers))

    @staticmethod
    async def _make(
        store: Store, server: str | None, options: Options | None, handlers: Handlers | None
    ) -> Client:
        return Client(store, server, options, handlers)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def login(self, user_id: str, password: str, device_name: str = "") -> Session:
        return self._run(self.client.login(user_id, password, device_name))

    def logout(self) -> bool:
        """Clear the store, then tell the server: see Client.logout."""
        return self._run(self.client.logout())

    def send(self, to: str, body: str) -> OutboxItem:
        return self._run(self.client.send(to, body))

    def resume_outbox(self) -> list[OutboxItem]:
        return self._run(self.client.resume_outbox())

    def catch_up(self, max_pages: int | None = None) -> SyncResult:
        return self._run(self.client.catch_up(max_pages))

    def history(self, peer: str, limit: int = 50) -> list[Message]:
        return self._run(self.client.api.history(peer, limit))[0]

    def create_group(self, title: str, members: list[str] | None = None) -> Group:
        return self._run(self.client.create_group(title, members))

    def send_group_message(self, group_id: str, body: str) -> OutboxItem:
        return self._run(self.client.send_group_message(group_id, body))

    def group_members(self, group_id: str) -> list[GroupMember]:
        return self._run(self.client.all_group_members(group_id))

    def add_members(self, group_id: str, user_ids: list[str]) -> Group:
        return self._run(self.client.add_members(group_id, user_ids))

    def leave_group(self, group_id: str) -> None:
        self._run(self.client.leave_group(group_id))

    def read_group(self, group_id: str, up_to_seq: int) -> int:
        return self._run(self.client.read_group(group_id, up_to_seq))

    def close(self) -> None:
        try:
            self._run(self.client.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
