"""`msgsync-client`: log in, send, tail, read history and use groups from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from msgsync_client.api import Transient
from msgsync_client.client import Client, Handlers, Options
from msgsync_client.errors import ApiError, MsgsyncError, NotLoggedIn, Unauthorized, Unavailable
from msgsync_client.models import GroupEvent, Message, OutboxState, ReadReceipt, Recall
from msgsync_client.sqlite_store import SqliteStore

__all__ = ["build_parser", "main"]


def home() -> Path:
    """Where sessions live: $MSGSYNC_CLIENT_HOME, else $XDG_DATA_HOME/msgsync-client."""
    configured = os.environ.get("MSGSYNC_CLIENT_HOME")
    if configured:
        return Path(configured)
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "msgsync-client"


def store_path(profile: str) -> Path:
    directory = home()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory / f"{profile}.db"


class Printer:
    def __init__(self, as_json: bool, user_id: str) -> None:
        self.as_json = as_json
        self.user_id = user_id

    def _out(self, record: dict[str, object], text: str) -> None:
        print(json.dumps(record) if self.as_json else text, flush=True)

    def message(self, m: Message) -> None:
        where = f"group {m.group_id}" if m.group_id is not None else m.recipient
        arrow = f"{m.sender} -> {where}"
        body = "(recalled)" if m.recalled_at else m.body
        self._out({"kind": "message", **m.to_json()}, f"[{m.created_at}] #{m.id} {arrow}: {body}")

    def recall(self, r: Recall) -> None:
        record: dict[str, object] = {
            "kind": "recall",
            "message_id": r.message_id,
            "from": r.sender,
            "to": r.recipient,
        }
        if r.group_id is not None:
            record["group_id"] = r.group_id
        self._out(record, f"#{r.message_id} was recalled by {r.sender}")

    def group_event(self, e: GroupEvent) -> None:
        record: dict[str, object] = {
            "kind": "group",
            "group_id": e.group_id,
            "event": {"seq": e.seq, "kind": e.kind, "actor": e.actor, "data": e.data},
        }
        user = e.data.get("user_id")
        text = {
            "created": f"{e.actor} created group {e.group_id} ({e.data.get('title')})",
            "member_added": f"{e.actor} added {user} to group {e.group_id}",
            "member_removed": f"{e.actor} removed {user} from group {e.group_id}",
            "member_left": f"{user} left group {e.group_id}",
            "title_changed": f"{e.actor} renamed group {e.group_id} to {e.data.get('title')}",
            "role_changed": f"{user} is now {e.data.get('role')} of group {e.group_id}",
        }.get(e.kind, f"group {e.group_id}: {e.kind}")
        self._out(record, text)

    def read(self, r: ReadReceipt) -> None:
        record = {
            "kind": "read",
            "reader": r.reader,
            "peer": r.peer,
            "up_to_message_id": r.up_to_message_id,
        }
        self._out(record, f"{r.reader} read {r.peer}'s conversation up to #{r.up_to_message_id}")

    def gap(self) -> None:
        note = "older operations were pruned by the server; messages are complete"
        if self.as_json:
            self._out({"kind": "gap"}, "")
        else:
            print(f"note: {note}", file=sys.stderr)


def _client(args: argparse.Namespace, options: Options | None = None) -> Client:
    store = SqliteStore(store_path(args.profile))
    try:
        return Client(store, args.server, options)
    except ValueError:
        store.close()
        raise NotLoggedIn() from None


async def _login(args: argparse.Namespace) -> int:
    if not args.server:
        raise MsgsyncError("--server URL is required to log in", "usage")
    password = os.environ.get("MSGSYNC_PASSWORD") or getpass.getpass(f"password for {args.user}: ")
    path = store_path(args.profile)
    # A failed login leaves no profile behind: not a new file, nor one without a session
    # (which only a failed login leaves, as logout deletes the profile).
    unused = not path.exists()
    try:
        async with _client(args) as client:
            session = client.store.session()
            unused = unused or session is None
            if session is not None and session.server != args.server.rstrip("/"):
                client.store.reset_stream()  # another server's versions mean nothing here
            try:
                new = await client.login(args.user, password, args.device_name)
            except (ApiError, Transient) as exc:
                raise LoginFailed(_why_login_failed(exc, args.user, args.server)) from exc
            except (ValueError, KeyError) as exc:  # a 2xx that is not msgsync's LoginOut
                raise LoginFailed(
                    f"login failed: {args.server} does not look like a msgsync server "
                    "(its answer to POST /login is not a login)"
                ) from exc
    except BaseException:
        if unused:
            _delete_store(path)
        raise
    print(f"logged in as {new.user_id} on {new.server} (device {new.device_id})")
    return 0


class LoginFailed(MsgsyncError):
    code = "login_failed"


def _why_login_failed(exc: ApiError | Transient, user: str, server: str) -> str:
    """The reason in words: what a person can do something about."""
    if isinstance(exc, ApiError):
        if exc.code == "bad_credentials":
            # The server does not tell which: an unknown user gets the same answer.
            return f"login failed: wrong password, or no user {user!r} on {server}"
        if exc.code == "validation_error":
            return f"login failed: the server refused the user id or password ({exc.detail})"
        if exc.status in {404, 405} or not exc.body.get("code"):  # no msgsync login there
            return (
                f"login failed: {server} does not look like a msgsync server "
                f"(POST /login answered {exc.status})"
            )
        return f"login failed: {exc.detail} ({exc.code})"
    causes = _causes(exc)
    if any(isinstance(cause, socket.gaierror) for cause in causes):
        host = httpx.URL(server).host or server
        return f"login failed: unknown server: no host named {host!r} was found"
    if any(isinstance(cause, httpx.UnsupportedProtocol) for cause in causes):
        return f"login failed: {server!r} is not a server URL (like http://host:8000)"
    if any(isinstance(cause, httpx.TransportError) for cause in causes):
        reason = "connection refused" if _refused(causes) else "no answer"
        return f"login failed: server unreachable: {server} ({reason})"
    wait = f"; try again in {exc.retry_after:.0f} s" if exc.retry_after is not None else ""
    return f"login failed: the server cannot take the login now ({exc}){wait}"


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _refused(causes: list[BaseException]) -> bool:
    return any(isinstance(cause, ConnectionRefusedError) for cause in causes) or any(
        "refused" in str(cause).lower() for cause in causes
    )


async def _send(args: argparse.Namespace) -> int:
    async with _client(args, Options(send_attempts=5)) as client:
        # Sends an earlier run left pending go first, with their original ids.
        await client.resume_outbox()
        item = await client.send(args.peer, args.text)
    if item.state is OutboxState.SENT:
        print(f"sent #{item.message_id} to {args.peer}")
        return 0
    print(f"msgsync-client: send failed ({item.error}); it is kept in the outbox", file=sys.stderr)
    return 1


async def _tail(args: argparse.Namespace) -> int:
    # --once must end: a bounded number of attempts; following live retries forever.
    options = Options(sync_attempts=5 if args.once else None)
    async with _client(args, options) as client:
        printer = Printer(args.json, client.session.user_id)
        client.handlers = Handlers(
            on_message=printer.message,
            on_recall=printer.recall,
            on_read=printer.read,
            on_gap=lambda _page: printer.gap(),
            on_group_event=printer.group_event,
        )
        if args.once:
            await client.catch_up()
            return 0  # leaving the block sends the final ack
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(client.run(stop))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if runner.done():
            runner.result()  # raises what ended the loop (e.g. Unauthorized)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    return 0


async def _history(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        client.session  # noqa: B018 (raises NotLoggedIn)
        messages, _ = await client.api.history(args.peer, args.limit)
        printer = Printer(args.json, client.session.user_id)
        for message in reversed(messages):  # the server pages newest first; read oldest first
            printer.message(message)
    return 0


async def _group_create(args: argparse.Namespace) -> int:
    async with _client(args, Options(send_attempts=5)) as client:
        group = await client.create_group(args.title, args.members)
    print(f"created group {group.group_id} ({group.title}) with {group.member_count} members")
    return 0


async def _group_send(args: argparse.Namespace) -> int:
    async with _client(args, Options(send_attempts=5)) as client:
        await client.resume_outbox()
        item = await client.send_group_message(args.group, args.text)
    if item.state is OutboxState.SENT:
        print(f"sent #{item.message_id} to group {args.group}")
        return 0
    print(f"msgsync-client: send failed ({item.error}); it is kept in the outbox", file=sys.stderr)
    return 1


async def _group_members(args: argparse.Namespace) -> int:
    async with _client(args, Options(send_attempts=5)) as client:
        members = await client.all_group_members(args.group)
    for member in members:
        if args.json:
            print(json.dumps({"user_id": member.user_id, "role": member.role}))
        else:
            print(f"{member.user_id} ({member.role})")
    return 0


async def _group_add(args: argparse.Namespace) -> int:
    async with _client(args, Options(send_attempts=5)) as client:
        group = await client.add_members(args.group, args.users)
    print(f"group {group.group_id} has {group.member_count} members")
    return 0


async def _group_remove(args: argparse.Namespace) -> int:
    async with _client(args, Options(send_attempts=5)) as client:
        await client.remove_member(args.group, args.user)
    print(f"removed {args.user} from group {args.group}")
    return 0


async def _group_leave(args: argparse.Namespace) -> int:
    async with _client(args, Options(send_attempts=5)) as client:
        await client.leave_group(args.group)
    print(f"left group {args.group}")
    return 0


async def _group_list(args: argparse.Namespace) -> int:
    """The user's groups, as the server lists them among the conversations."""
    async with _client(args, Options(send_attempts=5)) as client:
        before: str | None = None
        while True:
            page, before = await client.conversations(100, before)
            for line in page:
                if line.kind != "group":
                    continue
                if args.json:
                    record = {
                        "group_id": line.group_id,
                        "title": line.title,
                        "unread_count": line.unread_count,
                    }
                    print(json.dumps(record))
                else:
                    print(f"{line.group_id} {line.title} ({line.unread_count} unread)")
            if before is None:
                return 0


def _add_group_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("group", help="group conversations")
    actions = group.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a group, you as its owner")
    create.add_argument("title")
    create.add_argument("members", nargs="*", help="user ids to add")
    create.set_defaults(run=_group_create)
    send = actions.add_parser("send", help="send a message to a group")
    send.add_argument("group")
    send.add_argument("text")
    send.set_defaults(run=_group_send)
    members = actions.add_parser("members", help="a group's members and their roles")
    members.add_argument("group")
    members.add_argument("--json", action="store_true")
    members.set_defaults(run=_group_members)
    add = actions.add_parser("add", help="add members (admins and the owner)")
    add.add_argument("group")
    add.add_argument("users", nargs="+")
    add.set_defaults(run=_group_add)
    remove = actions.add_parser("remove", help="remove a member (admins and the owner)")
    remove.add_argument("group")
    remove.add_argument("user")
    remove.set_defaults(run=_group_remove)
    leave = actions.add_parser("leave", help="leave a group")
    leave.add_argument("group")
    leave.set_defaults(run=_group_leave)
    listing = actions.add_parser("list", help="your groups that have messages, newest first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_group_list)


async def _logout(args: argparse.Namespace) -> int:
    path = store_path(args.profile)
    try:
        async with _client(args) as client:
            user = client.session.user_id
            told = await client.logout()
    finally:
        # Whatever happened above (no answer from the server, no session in the profile),
        # nothing of the profile stays on the device.
        _delete_store(path)
    print(f"logged out {user}")
    if not told:
        print(
            "msgsync-client: the server could not be told; this device stays in your"
            " device list until you remove it from another one",
            file=sys.stderr,
        )
    return 0


def _delete_store(path: Path) -> None:
    # The store holds the user's messages: nothing of the session stays on the device.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 200:
        raise argparse.ArgumentTypeError("the limit is 1..200")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msgsync-client", description="msgsync from the command line."
    )
    parser.add_argument("--server", help="the server's base URL (needed to log in)")
    parser.add_argument(
        "--profile", default="default", help="one session per profile (default: default)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    login = commands.add_parser("login", help="log in (password: $MSGSYNC_PASSWORD or prompt)")
    login.add_argument("user")
    login.add_argument("--device-name", default="msgsync-client")
    login.set_defaults(run=_login)
    send = commands.add_parser("send", help="send a message")
    send.add_argument("peer")
    send.add_argument("text")
    send.set_defaults(run=_send)
    tail = commands.add_parser("tail", help="follow the stream live")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--once", action="store_true", help="catch up, print, ack, exit")
    tail.set_defaults(run=_tail)
    history = commands.add_parser("history", help="a conversation's past, oldest first")
    history.add_argument("peer")
    history.add_argument("--limit", type=_limit, default=50)
    history.add_argument("--json", action="store_true")
    history.set_defaults(run=_history)
    _add_group_commands(commands)
    logout = commands.add_parser("logout", help="end the session and delete its local data")
    logout.set_defaults(run=_logout)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = asyncio.run(args.run(args))
    except NotLoggedIn:
        print(
            "msgsync-client: not logged in: run `msgsync-client --server URL login USER`",
            file=sys.stderr,
        )
        return 2
    except Unauthorized as exc:
        print(f"msgsync-client: the session has ended ({exc.code}): log in again", file=sys.stderr)
        return 1
    except (Unavailable, Transient) as exc:
        print(f"msgsync-client: server unavailable: {exc}", file=sys.stderr)
        return 1
    except MsgsyncError as exc:
        print(f"msgsync-client: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
