"""Groups in the web client at /app, in real headless Chromium over a real server on
PostgreSQL: three users in one group, one of them offline (the page closed) while the
others talk; back, that user sees every message once, in order, with sender names, and the
list shows the group among the direct chats with the right unread count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import SCREENSHOT_DIR, chromium, require_chromium
from tests.conftest import migrated_pg_database
from tests.factories import PASSWORD, new_user_id
from tests.server import Server, running_server

pytestmark = [pytest.mark.browser, pytest.mark.server]

require_chromium()

from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

TITLE = "Weekend trip"


@pytest.fixture(scope="module")
def server(pg_admin_url: str) -> Iterator[Server]:
    # Made before the browser starts: Playwright's sync API holds an event loop from then on.
    with migrated_pg_database(pg_admin_url) as url, running_server(url) as running:
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


def open_app(context: BrowserContext, server: Server, errors: list[str]) -> Page:
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/app")
    return page


def log_in(browser: Browser, server: Server, user_id: str) -> tuple[BrowserContext, Page]:
    """A device of its own (a browser profile), logged in and online."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    errors: list[str] = []
    page = open_app(context, server, errors)
    page.get_by_label("User id").fill(user_id)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#who")).to_have_text(f"Signed in as {user_id}")
    expect(page.get_by_role("status")).to_have_text("Online")
    assert errors == []
    return context, page


def screenshot(page: Page, name: str) -> None:
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"web-{name}.png"))


def send(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")
    # Shown (pending at first), then delivered (the server answered) before anyone else
    # writes: the group's order is then the order of this test's sends. In the other order
    # the check for no pending message could pass before the page had drawn this one, and
    # the next sender's message could be stored first.
    expect(page.locator("#messages li.mine .body").last).to_have_text(text)
    expect(page.locator("#messages li.pending")).to_have_count(0)


def wait_for_group_read(server: Server, headers: dict[str, str]) -> None:
    """Long-poll the user's stream until the read cursor of a group is in it."""
    since = 0
    for _ in range(20):
        page = httpx.get(
            f"{server.url}/sync", params={"since": since, "timeout": 5}, headers=headers, timeout=15
        ).json()
        if any(e["kind"] == "read" and e["data"].get("group_id") for e in page["entries"]):
            return
        since = page["next_since"]
    raise AssertionError("no group read cursor reached the server")


def test_an_offline_member_catches_up_once_in_order_with_sender_names(
    server: Server, browser: Browser
) -> None:
    alice, bob, carol = (create_user(server, name) for name in ("alice", "bob", "carol"))
    alice_ctx, a = log_in(browser, server, alice)
    bob_ctx, b = log_in(browser, server, bob)
    carol_ctx, c = log_in(browser, server, carol)

    # Alice creates the group with Bob and Carol.
    a.get_by_role("button", name="New group").click()
    a.get_by_label("Group title").fill(TITLE)
    a.get_by_role("textbox", name="Members").fill(f"{bob}, {carol}")
    a.get_by_role("button", name="Create group").click()
    expect(a.get_by_role("heading", name=TITLE)).to_be_visible()
    expect(a.locator("#peer-note")).to_contain_text("3 members")
    # The other two learn of it live, from their streams.
    for page in (b, c):
        expect(page.locator("#conversations button[data-group] .name")).to_have_text([TITLE])

    # Carol closes her page (her device keeps its store) and is offline from then on.
    c.close()
    # Bob writes to Carol directly while she is away: a direct chat beside the group.
    b.get_by_label("Chat with").fill(carol)
    b.get_by_label("Chat with").press("Enter")
    expect(b.get_by_role("heading", name=f"Conversation with {carol}")).to_be_visible()
    send(b, "see you saturday?")

    # Alice and Bob talk in the group.
    b.locator("#conversations button[data-group]").click()
    expect(b.get_by_role("heading", name=TITLE)).to_be_visible()
    talk = [(a, alice, "who brings the tent?"), (b, bob, "I do"), (a, alice, "great")]
    talk += [(b, bob, "and food"), (a, alice, "thanks bob"), (b, bob, "leaving at 9")]
    for page, _, text in talk:
        send(page, text)
    texts = [text for _, _, text in talk]
    expect(a.locator("#messages li .body")).to_have_text(texts)
    expect(b.locator("#messages li .body")).to_have_text(texts)
    # Each sees the other's name on the other's messages, and none on their own.
    expect(a.locator("#messages li.theirs .sender")).to_have_text([bob] * 3)
    expect(a.locator("#messages li.mine .sender")).to_have_count(0)

    # Carol comes back: her device catches up from its stored cursor.
    errors: list[str] = []
    c = open_app(carol_ctx, server, errors)
    expect(c.get_by_role("status")).to_have_text("Online")
    # The list: the group (newest) above the direct chat, each with its unread count.
    names = c.locator("#conversations button .name")
    expect(names).to_have_text([TITLE, bob])
    expect(c.locator("#conversations button[data-group] .unread")).to_have_text(str(len(talk)))
    expect(c.locator(f'#conversations button[data-peer="{bob}"] .unread')).to_have_text("1")
    expect(c.locator("#conversations button[data-group] .preview")).to_have_text(
        f"{bob}: leaving at 9"
    )

    c.locator("#conversations button[data-group]").click()
    expect(c.get_by_role("heading", name=TITLE)).to_be_visible()
    expect(c.locator("#messages li .body")).to_have_text(texts)  # each once, in order
    expect(c.locator("#messages li .sender")).to_have_text([sender for _, sender, _ in talk])
    screenshot(c, "group-caught-up")
    # Opened is read: the badge goes, on this device and in the server's count.
    expect(c.locator("#conversations button[data-group] .unread")).to_have_count(0)
    login = httpx.post(f"{server.url}/login", json={"user_id": carol, "password": PASSWORD})
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    wait_for_group_read(server, headers)
    listed = httpx.get(f"{server.url}/conversations", headers=headers).json()
    (item,) = [x for x in listed["conversations"] if x["kind"] == "group"]
    assert item["unread_count"] == 0

    # Carol answers: the others see it with her name.
    send(c, "I'm in")
    for page in (a, b):
        expect(page.locator("#messages li .body").last).to_have_text("I'm in")
        expect(page.locator("#messages li.theirs .sender").last).to_have_text(carol)

    # The member list (Alice's, as owner, with Add member), and leaving: the group goes from
    # Bob's list, and from Alice's member list and count.
    a.get_by_role("button", name="Members").click()
    expect(a.locator("#members li")).to_have_count(3)
    expect(a.locator(f'#members li[data-user="{alice}"] .role')).to_have_text("owner")
    expect(a.get_by_label("Add member")).to_be_visible()
    screenshot(a, "group-members")
    b.get_by_role("button", name="Members").click()
    b.get_by_role("button", name="Leave group").click()
    expect(b.locator("#conversations button[data-group]")).to_have_count(0)
    expect(b.get_by_role("heading", name="No conversation open")).to_be_visible()
    # Alice's open list follows the group's events: Bob is gone from it.
    expect(a.locator("#members li")).to_have_count(2)
    expect(a.locator(f'#members li[data-user="{bob}"]')).to_have_count(0)
    expect(a.locator("#peer-note")).to_contain_text("2 members")
    assert errors == []
    for context in (alice_ctx, bob_ctx, carol_ctx):
        context.close()
