"""`msgsync-client` end to end against a real server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from conftest import PASSWORD, new_user
from msgsync_client import MemoryStore, SyncClient


def run(home: Path, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MSGSYNC_CLIENT_HOME": str(home), "MSGSYNC_PASSWORD": password}
    return subprocess.run(
        [sys.executable, "-m", "msgsync_client.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_login_send_tail_history_logout(server_url: str, tmp_path: Path) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    a_home, b_home = tmp_path / "a", tmp_path / "b"

    assert run(a_home, "--server", server_url, "login", alice).returncode == 0
    sent = run(a_home, "send", bob, "hello from the shell")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("sent #")

    assert run(b_home, "--server", server_url, "login", bob).returncode == 0
    tail = run(b_home, "tail", "--once", "--json")
    assert tail.returncode == 0, tail.stderr
    (line,) = tail.stdout.splitlines()
    record = json.loads(line)
    assert (record["kind"], record["from"], record["body"]) == (
        "message",
        alice,
        "hello from the shell",
    )
    # Acked and stored: a second catch-up prints nothing new.
    assert run(b_home, "tail", "--once", "--json").stdout == ""

    history = run(b_home, "history", alice, "--limit", "10")
    assert history.returncode == 0
    assert "hello from the shell" in history.stdout

    for path in b_home.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(b_home.stat().st_mode) == 0o700

    out = run(b_home, "logout")
    assert out.returncode == 0, out.stderr
    assert list(b_home.iterdir()) == []
    after = run(b_home, "tail", "--once")
    assert after.returncode == 2
    assert "not logged in" in after.stderr


def test_tail_follows_live_until_interrupted(server_url: str, tmp_path: Path) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    assert run(tmp_path / "b", "--server", server_url, "login", bob).returncode == 0
    env = {**os.environ, "MSGSYNC_CLIENT_HOME": str(tmp_path / "b")}
    tail = subprocess.Popen(
        [sys.executable, "-m", "msgsync_client.cli", "tail", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run(tmp_path / "a", "--server", server_url, "login", alice).returncode == 0
        # Sent after tail started: it arrives through the long-poll.
        assert run(tmp_path / "a", "send", bob, "live one").returncode == 0
        assert tail.stdout is not None
        record = json.loads(tail.stdout.readline())
        assert (record["from"], record["body"]) == (alice, "live one")
    finally:
        tail.send_signal(signal.SIGINT)
        _, err = tail.communicate(timeout=30)
    assert tail.returncode == 0, err


def test_errors_are_clear_and_fail(server_url: str, tmp_path: Path) -> None:
    alice = new_user(server_url, "alice")
    assert run(tmp_path, "--server", server_url, "login", alice).returncode == 0
    nobody = run(tmp_path, "send", "no-such-user-x", "hi")
    assert nobody.returncode == 1
    assert "recipient_not_found" in nobody.stderr


def test_a_failed_login_says_why_and_leaves_no_profile(server_url: str, tmp_path: Path) -> None:
    alice = new_user(server_url, "alice")
    home = tmp_path / "home"
    failures = {
        "wrong password": (
            [server_url, alice, "wrong-password"],
            f"login failed: wrong password, or no user '{alice}' on {server_url}",
        ),
        "unknown user": (
            [server_url, "nobody-here", PASSWORD],
            f"login failed: wrong password, or no user 'nobody-here' on {server_url}",
        ),
        "unknown server": (
            ["http://no-such-host.invalid:8000", alice, PASSWORD],
            "login failed: unknown server: no host named 'no-such-host.invalid' was found",
        ),
        "server unreachable": (
            ["http://127.0.0.1:9", alice, PASSWORD],
            "login failed: server unreachable: http://127.0.0.1:9 (connection refused)",
        ),
        "not msgsync": (
            [f"{server_url}/nothing-here", alice, PASSWORD],
            f"login failed: {server_url}/nothing-here does not look like a msgsync server "
            "(POST /login answered 404)",
        ),
    }
    for case, ([server, user, password], said) in failures.items():
        failed = run(
            home, "--server", server, "--profile", "second", "login", user, password=password
        )
        assert failed.returncode == 1, (case, failed.stderr)
        assert failed.stderr.strip() == f"msgsync-client: {said}", case
        assert sorted(p.name for p in home.iterdir()) == [], case

    # A failed login does not touch a profile that holds a session: alice stays logged in.
    assert run(home, "--server", server_url, "login", alice).returncode == 0
    again = run(home, "--server", server_url, "login", alice, password="wrong-password")
    assert again.returncode == 1
    assert sorted(p.name for p in home.iterdir()) == ["default.db"]
    still = run(home, "tail", "--once")
    assert still.returncode == 0, still.stderr


def test_the_blocking_facade(server_url: str) -> None:
    alice, bob = new_user(server_url, "alice"), new_user(server_url, "bob")
    with SyncClient(MemoryStore(), server_url) as a:
        a.login(alice, PASSWORD)
        item = a.send(bob, "from a script")
        assert item.state.value == "sent"
        result = a.catch_up()
        assert [m.body for m in result.messages] == ["from a script"]
        assert [m.id for m in a.history(bob)] == [item.message_id]
        group = a.create_group("Scripted", [bob])
        sent = a.send_group_message(group.group_id, "to the group")
        assert sent.state.value == "sent"
        roles = {m.user_id: m.role for m in a.group_members(group.group_id)}
        assert roles == {alice: "owner", bob: "member"}
        result = a.catch_up()
        assert [m.body for m in result.messages] == ["to the group"]
        assert a.client.store.group(group.group_id) is not None


def test_logout_deletes_the_profile_even_when_the_server_cannot_be_told(
    server_url: str, tmp_path: Path
) -> None:
    alice = new_user(server_url, "alice")
    home = tmp_path / "a"
    assert run(home, "--server", server_url, "login", alice).returncode == 0
    # The server has gone away since (nothing listens on port 9).
    with sqlite3.connect(home / "default.db") as db:
        db.execute("UPDATE state SET value = 'http://127.0.0.1:9' WHERE key = 'server'")
    out = run(home, "logout")
    assert out.returncode == 0, out.stderr
    assert f"logged out {alice}" in out.stdout
    assert "the server could not be told" in out.stderr
    assert list(home.iterdir()) == []


def test_groups_from_the_shell(server_url: str, tmp_path: Path) -> None:
    alice, bob, carol = (new_user(server_url, p) for p in ("alice", "bob", "carol"))
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    assert run(a_home, "--server", server_url, "login", alice).returncode == 0
    assert run(b_home, "--server", server_url, "login", bob).returncode == 0

    created = run(a_home, "group", "create", "Shell trip", bob)
    assert created.returncode == 0, created.stderr
    words = created.stdout.split()
    assert words[:2] == ["created", "group"]
    assert created.stdout.rstrip().endswith("(Shell trip) with 2 members")
    group_id = words[2]

    sent = run(b_home, "group", "send", group_id, "hello group")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("sent #")
    added = run(a_home, "group", "add", group_id, carol)
    assert added.stdout.strip() == f"group {group_id} has 3 members"

    members = run(b_home, "group", "members", group_id, "--json")
    assert members.returncode == 0, members.stderr
    assert [json.loads(line) for line in members.stdout.splitlines()] == sorted(
        [
            {"user_id": alice, "role": "owner"},
            {"user_id": bob, "role": "member"},
            {"user_id": carol, "role": "member"},
        ],
        key=lambda m: m["user_id"],
    )

    tail = run(a_home, "tail", "--once", "--json")
    assert tail.returncode == 0, tail.stderr
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    # Callbacks come in version order within a kind: messages, then group events.
    assert [(r["kind"], r.get("body"), r.get("event", {}).get("kind")) for r in records] == [
        ("message", "hello group", None),
        ("group", None, "created"),
        ("group", None, "member_added"),
    ]
    assert records[0]["group_id"] == group_id

    listed = run(a_home, "group", "list")  # bob's message is unread for alice
    assert listed.stdout.strip() == f"{group_id} Shell trip (1 unread)"

    assert run(b_home, "group", "leave", group_id).returncode == 0
    refused = run(b_home, "group", "send", group_id, "still here?")
    assert refused.returncode == 1
    assert "group_not_found" in refused.stderr
