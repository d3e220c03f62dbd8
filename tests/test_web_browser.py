"""The web client at /app in real headless Chromium over a real server on PostgreSQL: two
users chat, one goes offline while the other sends 50 messages and retention prunes past
the offline device's cursor; back online it shows all 50 once and in order. A new device
of the same user shows the past history; read receipts and a recall reach the other side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import SCREENSHOT_DIR, chromium, require_chromium
from tests.conftest import migrated_pg_database
from tests.factories import PASSWORD, new_user_id
from tests.server import Server, running_server

pytestmark = [pytest.mark.browser, pytest.mark.server]

OFFLINE_SENDS = 50

require_chromium()

from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402


@pytest.fixture(scope="module")
def database(pg_admin_url: str) -> Iterator[str]:
    # Its own database: the retention run below prunes every user's offline store. Made
    # before the browser starts: Playwright's sync API holds an event loop from then on.
    with migrated_pg_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="module")
def server(database: str) -> Iterator[Server]:
    with running_server(database) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Browser]:
    # A guard for a loaded machine, not a measure: assertions retry until the page shows
    # what they expect, for up to this long.
    expect.set_options(timeout=30_000)
    with chromium() as browser:
        yield browser


def create_user(server: Server, prefix: str) -> str:
    user_id = new_user_id(prefix)
    answer = httpx.post(f"{server.url}/users", json={"user_id": user_id, "password": PASSWORD})
    assert answer.status_code == 201
    return user_id


def open_device(browser: Browser, server: Server, user_id: str) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/app")
    page.get_by_label("User id").fill(user_id)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#who")).to_have_text(f"Signed in as {user_id}")
    expect(page.get_by_role("status")).to_have_text("Online")
    assert errors == []
    return context, page


def open_chat(page: Page, peer: str) -> None:
    page.get_by_label("Chat with").fill(peer)
    page.get_by_label("Chat with").press("Enter")
    expect(page.get_by_role("heading", name=f"Conversation with {peer}")).to_be_visible()


def send(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")  # the keyboard sends


def bodies(page: Page) -> list[str]:
    texts: list[str] = page.locator("#messages li .body").all_inner_texts()
    return texts


def show_all(page: Page, count: int) -> None:
    """Page back through the history until `count` messages are shown."""
    older = page.get_by_role("button", name="Load older messages")
    shown = page.locator("#messages li .body")
    while (before := shown.count()) < count:
        older.click()
        # The next click only once this one's page is drawn (it may need the server).
        expect(shown).not_to_have_count(before)


def screenshot(page: Page, name: str) -> None:
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"web-{name}.png"))


def wait_for_read_entry(server: Server, headers: dict[str, str]) -> None:
    """Long-poll the user's stream until a read receipt is in it."""
    since = 0
    for _ in range(20):
        page = httpx.get(
            f"{server.url}/sync", params={"since": since, "timeout": 5}, headers=headers, timeout=15
        ).json()
        if any(e["kind"] == "read" for e in page["entries"]):
            return
        since = page["next_since"]
    raise AssertionError("no read receipt reached the server")


def retention(server_db: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "retention", "--json", "--max-age", "0"],
        env={**os.environ, "MSGSYNC_DATABASE_URL": server_db},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_offline_device_catches_up_once_in_order_and_a_new_device_has_the_history(
    server: Server, browser: Browser, database: str
) -> None:
    alice, bob = create_user(server, "alice"), create_user(server, "bob")
    alice_ctx, a = open_device(browser, server, alice)
    bob_ctx, b = open_device(browser, server, bob)

    open_chat(a, bob)
    send(a, "hello bob")
    # Bob sees the conversation with one unread message, live.
    expect(b.locator(f'#conversations button[data-peer="{alice}"] .unread')).to_have_text("1")
    b.locator(f'#conversations button[data-peer="{alice}"]').click()
    expect(b.locator("#messages li .body")).to_have_text(["hello bob"])
    # Opening it read it: the badge goes, and Alice sees the receipt.
    expect(b.locator("#conversations .unread")).to_have_count(0)
    expect(a.locator("#messages li.mine .receipt")).to_have_text(["Read"])
    send(b, "hi alice")
    expect(a.locator("#messages li .body")).to_have_text(["hello bob", "hi alice"])
    screenshot(a, "chat")

    # Bob's device goes offline; the page says so.
    bob_ctx.set_offline(True)
    expect(b.get_by_role("status")).to_have_text("Offline: reconnecting…")
    expected = [f"offline {n:02d}" for n in range(OFFLINE_SENDS)]
    for text in expected:
        send(a, text)
    # The newest page: the 50 just sent, all delivered.
    expect(a.locator("#messages li.mine .receipt")).to_have_count(OFFLINE_SENDS)
    expect(a.locator("#messages li.pending")).to_have_count(0)
    # Everything in the offline store goes, far past Bob's device cursor.
    pruned = retention(database)
    assert pruned, "retention reported nothing"
    screenshot(b, "offline")

    bob_ctx.set_offline(False)
    expect(b.get_by_role("status")).to_have_text("Online")
    # The newest page of the conversation is exactly the 50 sent while offline, in order.
    expect(b.locator("#messages li .body")).to_have_text(expected)
    show_all(b, OFFLINE_SENDS + 2)
    assert bodies(b) == ["hello bob", "hi alice", *expected]  # each once, in order
    # Bob read them (the conversation is open): every one of Alice's shows Read.
    expect(a.locator("#messages li.mine .receipt")).to_have_text(["Read"] * OFFLINE_SENDS)
    screenshot(b, "caught-up")

    # Alice recalls her last message: both sides show it recalled.
    a.get_by_role("button", name=f"Recall message {expected[-1]}").click()
    a.get_by_role("button", name="Yes, recall").click()  # asked in the page, not a dialog
    expect(b.locator("#messages li.recalled .body")).to_have_text(["Message recalled"])
    expect(a.locator("#messages li.recalled .body")).to_have_text(["Message recalled"])

    # Carol writes; Bob reads it on this device; retention then prunes that read receipt.
    carol = create_user(server, "carol")
    login = httpx.post(f"{server.url}/login", json={"user_id": carol, "password": PASSWORD})
    carol_headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    sent = httpx.post(
        f"{server.url}/messages", json={"to": bob, "body": "hi from carol"}, headers=carol_headers
    )
    assert sent.status_code == 201
    b.locator(f'#conversations button[data-peer="{carol}"]').click()
    expect(b.locator("#messages li .body")).to_have_text(["hi from carol"])
    expect(b.locator("#conversations .unread")).to_have_count(0)
    wait_for_read_entry(server, carol_headers)  # on the server before retention runs
    retention(database)

    # A new device of Bob's (its own browser profile) logs in and has the past history;
    # with Bob's receipt for Carol's message pruned, the badge comes from the server (0),
    # not from the replayed message alone (1).
    new_ctx, n = open_device(browser, server, bob)
    expect(n.locator(f'#conversations button[data-peer="{carol}"]')).to_be_visible()
    expect(n.locator("#conversations .unread")).to_have_count(0)
    n.locator(f'#conversations button[data-peer="{alice}"]').click()
    expect(n.locator("#messages li .body")).to_have_count(OFFLINE_SENDS)
    show_all(n, OFFLINE_SENDS + 2)
    assert bodies(n) == ["hello bob", "hi alice", *expected[:-1], "Message recalled"]
    screenshot(n, "new-device")
    for context in (alice_ctx, bob_ctx, new_ctx):
        context.close()


def test_the_client_is_served_with_a_strict_policy(server: Server) -> None:
    answer = httpx.get(f"{server.url}/app", follow_redirects=True)
    assert answer.status_code == 200
    assert '<script type="module" src="app.js">' in answer.text
    assert "script-src 'self';" in answer.headers["content-security-policy"]
    script = httpx.get(f"{server.url}/app/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
