"""The conformance adapter: drives this SDK by JSON lines on stdin/stdout.

The protocol is defined in clients/conformance/README.md; the scenarios live there too.
Run as `python -m msgsync_client.adapter`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from msgsync_client.api import Transient
from msgsync_client.client import Client, Handlers, Options
from msgsync_client.errors import MsgsyncError
from msgsync_client.models import Message, OutboxState, Page
from msgsync_client.sqlite_store import SqliteStore

__all__ = ["main"]


class _DyingStore(SqliteStore):
    """Test hook outside the SDK: kill the process inside apply_page's transaction, after
    the n-th page's entries are written and before its cursor is, the point a store must
    not split."""

    def __init__(self, path: str, die_after: int | None) -> None:
        super().__init__(path)
        self._die_after = die_after
        self._pages = 0

    def _before_cursor(self, page: Page) -> None:
        self._pages += 1
        if self._die_after is not None and self._pages >= self._die_after:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


_OPTION_NAMES = {
    "ack_delay",
    "ack_every",
    "page_limit",
    "backoff_base",
    "backoff_cap",
}


class BadRequest(Exception):
    pass


class Adapter:
    def __init__(self) -> None:
        self.client: Client | None = None
        # [group_id, seq] of each group message the SDK told the app of, in order.
        self.heard: list[list[Any]] = []

    def _heard(self, message: Message) -> None:
        if message.group_id is not None:
            self.heard.append([message.group_id, message.seq])

    def _client(self) -> Client:
        if self.client is None:
            raise BadRequest("open first")
        return self.client

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        if cmd == "open":
            return await self.open(request)
        client = self._client()
        if cmd == "login":
            session = await client.login(
                request["user_id"], request["password"], request.get("device_name", "")
            )
            return {"user_id": session.user_id, "device_id": session.device_id}
        if cmd == "logout":
            return {"server_confirmed": await client.logout()}
        if cmd == "send":
            item = await client.send(request["to"], request["body"])
            if item.state is OutboxState.FAILED:
                raise MsgsyncError(f"send failed: {item.error}", "send_failed")
            return {
                "client_msg_id": item.client_msg_id,
                "state": item.state.value,
                "message_id": item.message_id,
            }
        if cmd in _GROUP_COMMANDS:
            return await _GROUP_COMMANDS[cmd](client, request)
        if cmd == "resume_outbox":
            return {"outbox": [i.to_json() for i in await client.resume_outbox()]}
        if cmd == "sync":
            result = await client.catch_up(request.get("max_pages"))
            return {
                "pages": result.pages,
                "applied": result.applied,
                "cursor": result.cursor,
                "history_fallback": result.history_fallback,
                "recovered": result.recovered,
            }
        if cmd == "flush_acks":
            return {"acked": await client.flush_acks()}
        if cmd == "state":
            return {**self.state(client), "heard": list(self.heard)}
        if cmd == "close":
            await client.aclose()
            self.client = None
            return {}
        raise BadRequest(f"unknown cmd {cmd!r}")

    async def open(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.client is not None:
            raise BadRequest("already open")
        raw = dict(request.get("options") or {})
        die_after = raw.pop("die_after_applying_pages", None)
        options = Options(**{k: v for k, v in raw.items() if k in _OPTION_NAMES})
        if "max_attempts" in raw:
            options.send_attempts = options.sync_attempts = int(raw["max_attempts"])
        store = _DyingStore(request["store"], die_after)
        handlers = Handlers(on_message=self._heard)
        self.client = Client(store, request["server"], options, handlers)
        session = store.session()
        return {
            "logged_in": session is not None,
            "user_id": session.user_id if session else None,
            "device_id": session.device_id if session else None,
            "cursor": store.cursor(),
        }

    @staticmethod
    def state(client: Client) -> dict[str, Any]:
        store = client.store
        session = store.session()  # None after a logout: what is left must be nothing
        return {
            "user_id": session.user_id if session else None,
            "device_id": session.device_id if session else None,
            "cursor": store.cursor(),
            "acked": store.acked(),
            "messages": [
                {
                    "id": m.id,
                    "from": m.sender,
                    "to": m.recipient,
                    "body": m.body,
                    "client_msg_id": m.client_msg_id,
                    "recalled_at": m.recalled_at,
                }
                for m in store.messages()
                if m.group_id is None
            ],
            "group_messages": [
                {
                    "id": m.id,
                    "group_id": m.group_id,
                    "seq": m.seq,
                    "from": m.sender,
                    "body": m.body,
                    "client_msg_id": m.client_msg_id,
                    "recalled_at": m.recalled_at,
                }
                for m in store.messages()
                if m.group_id is not None
            ],
            "groups": [
                {
                    "group_id": g.group_id,
                    "title": g.title,
                    "owner": g.owner,
                    "role": g.role,
                    "seq": g.seq,
                    "read_seq": g.read_seq,
                    "pending": g.pending_news or g.stale,
                    "members": dict(sorted(g.members.items())),
                }
                for g in store.groups()
            ],
            "applied": [list(a) for a in store.applied()],
            "reads": [
                {"reader": r.reader, "peer": r.peer, "up_to_message_id": r.up_to_message_id}
                for r in store.reads()
            ],
            "outbox": [i.to_json() for i in store.outbox()],
            "gaps": store.gaps(),
        }


async def _create_group(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    members = [str(u) for u in request.get("members") or []]
    group = await client.create_group(str(request["title"]), members)
    return {
        "group_id": group.group_id,
        "title": group.title,
        "owner": group.owner,
        "member_count": group.member_count,
    }


async def _group_send(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    item = await client.send_group_message(str(request["group_id"]), str(request["body"]))
    if item.state is OutboxState.FAILED:
        raise MsgsyncError(f"send failed: {item.error}", "send_failed")
    return {
        "client_msg_id": item.client_msg_id,
        "state": item.state.value,
        "message_id": item.message_id,
    }


async def _add_members(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    user_ids = [str(u) for u in request["user_ids"]]
    group = await client.add_members(str(request["group_id"]), user_ids)
    return {"member_count": group.member_count}


async def _remove_member(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    await client.remove_member(str(request["group_id"]), str(request["user_id"]))
    return {}


async def _leave_group(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    await client.leave_group(str(request["group_id"]))
    return {}


async def _read_group(client: Client, request: dict[str, Any]) -> dict[str, Any]:
    read_seq = await client.read_group(str(request["group_id"]), int(request["up_to_seq"]))
    return {"read_seq": read_seq}


_GROUP_COMMANDS = {
    "create_group": _create_group,
    "group_send": _group_send,
    "add_members": _add_members,
    "remove_member": _remove_member,
    "leave_group": _leave_group,
    "read_group": _read_group,
}


async def _serve() -> None:
    adapter = Adapter()
    loop = asyncio.get_running_loop()
    while True:
        # Read stdin off the loop so the SDK's timers (the delayed ack) run between commands.
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        if not line.strip():
            continue
        reply: dict[str, Any]
        request_id: Any = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise BadRequest("a request is a JSON object")
            request_id = request.get("id")
            reply = {"ok": True, "result": await adapter.handle(request)}
        except (BadRequest, ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": {"code": "bad_request", "message": str(exc)}}
        except MsgsyncError as exc:
            reply = {"ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except Transient as exc:
            reply = {"ok": False, "error": {"code": "unavailable", "message": str(exc)}}
        reply["id"] = request_id
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    if adapter.client is not None:
        await adapter.client.aclose()


def main() -> None:
    logging.basicConfig(level=os.environ.get("MSGSYNC_ADAPTER_LOG", "WARNING"), stream=sys.stderr)
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
