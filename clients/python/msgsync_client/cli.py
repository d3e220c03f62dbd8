"""`msgsync-client`: log in, send, tail and read history from the command line."""

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
from msgsync_client.models import Message, OutboxState, ReadReceipt, Recall
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
        arrow = f"{m.sender} -> {m.recipient}"
        body = "(recalled)" if m.recalled_at else m.body
        self._out({"kind": "message", **m.to_json()}, f"[{m.created_at}] #{m.id} {arrow}: {body}")

    def recall(self, r: Recall) -> None:
        record = {"kind": "recall", "message_id": r.message_id, "from": r.sender, "to": r.recipient}
        self._out(record, f"#{r.message_id} was recalled by {r.sender}")

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
