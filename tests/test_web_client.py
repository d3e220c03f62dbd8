"""The web client at /app as a person uses it, in real headless Chromium over a real server,
each test on a phone (390 px) and a desktop viewport: a shared browser forgets a user at
logout, the phone shows one pane at a time, dates and previews, errors in words, a status
that tells the truth, recall with an in-page confirmation, the tab title's unread count."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOT_DIR, require_chromium
from tests.factories import PASSWORD, new_user_id
from tests.server import Server, running_server

pytestmark = [pytest.mark.browser, pytest.mark.server]

require_chromium()

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402

VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1100, "height": 760}}


@pytest.fixture(scope="module")
def server(postgresql_url: str) -> Iterator[Server]:
    with running_server(postgresql_url) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Browser]:
    # A guard for a loaded machine, not a measure: assertions retry for up to this long.
    expect.set_options(timeout=30_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


class Device:
    """One browser profile (a context) with one page, and what its console said."""

    def __init__(self, browser: Browser, server: Server, layout: str) -> None:
        self.layout = layout
        self.server = server
        self.context: BrowserContext = browser.new_context(
            viewport=VIEWPORTS[layout], locale="en-US", timezone_id="UTC"
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.dialogs: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    @property
    def phone(self) -> bool:
        return self.layout == "phone"

    def goto(self) -> None:
        self.page.goto(f"{self.server.url}/app")
        expect(self.page.get_by_role("heading", name="Log in")).to_be_visible()

    def login(self, user_id: str, password: str = PASSWORD) -> None:
        page = self.page
        page.get_by_label("User id").fill(user_id)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()

    def logged_in(self, user_id: str) -> None:
        expect(self.page.locator("#who")).to_have_text(f"Signed in as {user_id}")
        expect(self.page.get_by_role("status")).to_have_text("Online")

    def list_pane(self) -> None:
        """Show the conversation list (on a phone, leave the open conversation)."""
        back = self.page.get_by_role("button", name="Back to conversations")
        if self.phone and back.is_visible():
            back.click()
        expect(self.page.get_by_role("heading", name="Conversations")).to_be_visible()

    def open_chat(self, peer: str) -> None:
        self.list_pane()
        self.page.get_by_label("Chat with").fill(peer)
        self.page.get_by_label("Chat with").press("Enter")
        expect(self.page.get_by_role("heading", name=f"Conversation with {peer}")).to_be_visible()

    def open_listed(self, peer: str) -> None:
        self.list_pane()
        self.page.locator(f'#conversations button[data-peer="{peer}"]').click()
        expect(self.page.get_by_role("heading", name=f"Conversation with {peer}")).to_be_visible()

    def send(self, text: str) -> None:
        box = self.page.get_by_label("Message", exact=True)
        box.fill(text)
        box.press("Enter")

    def logout(self) -> None:
        self.list_pane()
        self.page.get_by_role("button", name="Log out").click()
        expect(self.page.get_by_role("heading", name="Log in")).to_be_visible()

    def fits(self) -> None:
        """Nothing runs off the side of the viewport."""
        width = self.page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"horizontal overflow: {width}"

    def in_view(self, selector: str) -> None:
        box = self.page.locator(selector).bounding_box()
        assert box is not None, f"{selector} not rendered"
        size = VIEWPORTS[self.layout]
        assert box["x"] >= 0 and box["x"] + box["width"] <= size["width"], (selector, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= size["height"], (selector, box)

    def stored(self) -> dict[str, object]:
        """What the browser keeps for this origin: IndexedDB databases and their object
        stores' record counts, and localStorage."""
        result: dict[str, object] = self.page.evaluate(
            """async () => {
              const dbs = {};
              for (const info of await indexedDB.databases()) {
                const db = await new Promise((ok, ko) => {
                  const r = indexedDB.open(info.name);
                  r.onsuccess = () => ok(r.result);
                  r.onerror = () => ko(r.error);
                });
                const counts = {};
                for (const name of db.objectStoreNames) {
                  const tx = db.transaction(name);
                  counts[name] = await new Promise((ok) => {
                    const r = tx.objectStore(name).count();
                    r.onsuccess = () => ok(r.result);
                  });
                }
                db.close();
                dbs[info.name] = counts;
              }
              return { indexedDB: dbs, localStorage: { ...localStorage } };
            }"""
        )
        return result

    def screenshot(self, name: str) -> None:
        if SCREENSHOT_DIR:
            self.page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"web-{name}.png"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture(params=list(VIEWPORTS))
def layout(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def device(browser: Browser, server: Server, layout: str) -> Iterator[Device]:
    opened = Device(browser, server, layout)
    yield opened
    opened.close()


def create_user(server: Server, prefix: str) -> tuple[str, dict[str, str]]:
    """A new account and a bearer header of a session of its own (not the browser's)."""
    user_id = new_user_id(prefix)
    body = {"user_id": user_id, "password": PASSWORD}
    assert httpx.post(f"{server.url}/users", json=body).status_code == 201
    login = httpx.post(f"{server.url}/login", json={**body, "device_name": "script"})
    assert login.status_code == 201
    return user_id, {"Authorization": f"Bearer {login.json()['access_token']}"}


def post(server: Server, headers: dict[str, str], to: str, body: str) -> int:
    sent = httpx.post(f"{server.url}/messages", json={"to": to, "body": body}, headers=headers)
    assert sent.status_code == 201, sent.text
    message_id: int = sent.json()["message"]["id"]
    return message_id


def test_a_shared_browser_forgets_the_user_at_logout(device: Device, server: Server) -> None:
    """Two accounts use /app in turn: the second sees only its own conversations, and its
    first sync starts from its own beginning although it has more entries than the first
    account's cursor (so the server's since_ahead would not have hidden a stale cursor)."""
    alice, alice_h = create_user(server, "alice")
    dave, _ = create_user(server, "dave")
    bob, _ = create_user(server, "bob")
    erin, erin_h = create_user(server, "erin")
    post(server, alice_h, dave, "alice's private note")  # Alice's stream: one entry
    firsts = [f"bob's first {n}" for n in range(4)]
    for text in firsts:  # Bob's stream: four entries, above Alice's cursor of one
        post(server, erin_h, bob, text)

    device.goto()
    device.login(alice)
    device.logged_in(alice)
    device.open_listed(dave)
    expect(device.page.locator("#messages li .body")).to_have_text(["alice's private note"])
    device.logout()
    after_logout = device.stored()
    page_text = device.page.locator("body").inner_text()

    device.login(bob)
    device.logged_in(bob)
    expect(device.page.locator(f'#conversations button[data-peer="{erin}"]')).to_be_visible()
    expect(device.page.locator("#conversations button")).to_have_count(1)
    device.open_listed(erin)
    expect(device.page.locator("#messages li .body")).to_have_text(firsts)
    assert "private note" not in device.page.locator("body").inner_text()
    # After the logout nothing of Alice was left: no database, no key, not on the page.
    assert after_logout == {"indexedDB": {}, "localStorage": {}}
    assert alice not in page_text and "private note" not in page_text
    assert device.errors == []
