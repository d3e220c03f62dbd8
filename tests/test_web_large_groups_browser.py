"""A large group in the web client at /app, in real headless Chromium over a real server on
PostgreSQL whose groups turn large from their fourth member: its messages never reach the
members' streams, only `group_news` entries do, and the page must follow each to the
group's log. Two members talk live; a third, offline meanwhile, comes back to every
message once, in order, with the right unread count."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.browser import chromium, require_chromium
from tests.conftest import migrated_pg_database
from tests.factories import PASSWORD
from tests.server import Server, running_server

pytestmark = [pytest.mark.browser, pytest.mark.server]

require_chromium()

from playwright.sync_api import Browser, expect  # noqa: E402

from tests.test_web_groups_browser import (  # noqa: E402
    create_user,
    log_in,
    open_app,
    screenshot,
    send,
)

TITLE = "Open-air festival"
FANOUT_LIMIT = 3  # a group of four is large


@pytest.fixture(scope="module")
def server(pg_admin_url: str) -> Iterator[Server]:
    # Made before the browser starts: Playwright's sync API holds an event loop from then on.
    env = {"MSGSYNC_GROUP_FANOUT_LIMIT": str(FANOUT_LIMIT)}
    with migrated_pg_database(pg_admin_url) as url, running_server(url, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Browser]:
    expect.set_options(timeout=30_000)  # a guard for a loaded machine, not a measure
    with chromium() as browser:
        yield browser


def test_a_large_group_shows_its_messages_live_and_after_a_catch_up(
    server: Server, browser: Browser
) -> None:
    alice, bob, carol, dave = (create_user(server, n) for n in ("alice", "bob", "carol", "dave"))
    alice_ctx, a = log_in(browser, server, alice)
    bob_ctx, b = log_in(browser, server, bob)
    dave_ctx, d = log_in(browser, server, dave)

    a.get_by_role("button", name="New group").click()
    a.get_by_label("Group title").fill(TITLE)
    a.get_by_role("textbox", name="Members").fill(f"{bob}, {carol}, {dave}")
    a.get_by_role("button", name="Create group").click()
    expect(a.get_by_role("heading", name=TITLE)).to_be_visible()
    expect(a.locator("#peer-note")).to_contain_text("4 members")
    group_id = a.locator("#conversations button[data-group]").get_attribute("data-group")
    assert group_id
    login = httpx.post(f"{server.url}/login", json={"user_id": alice, "password": PASSWORD})
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    group = httpx.get(f"{server.url}/groups/{group_id}", headers=headers).json()["group"]
    assert group["large"] is True
    for page in (b, d):
        expect(page.locator("#conversations button[data-group] .name")).to_have_text([TITLE])

    # Dave closes his page (his device keeps its store) and is offline from then on.
    d.close()
    b.locator("#conversations button[data-group]").click()
    expect(b.get_by_role("heading", name=TITLE)).to_be_visible()
    # Alice and Bob talk: each message reaches the other, and its sender, through the log.
    talk = [(a, alice, "tickets are out"), (b, bob, "got two"), (a, alice, "camping?")]
    talk += [(b, bob, "yes, by the lake"), (a, alice, "bring the stove"), (b, bob, "will do")]
    for page, _, text in talk:
        send(page, text)
    texts = [text for _, _, text in talk]
    for page in (a, b):
        expect(page.locator("#messages li .body")).to_have_text(texts)  # each once, in order
    expect(a.locator("#messages li.theirs .sender")).to_have_text([bob] * 3)

    # Dave comes back: the group's news makes his device read the log, from where it was.
    errors: list[str] = []
    d = open_app(dave_ctx, server, errors)
    expect(d.get_by_role("status")).to_have_text("Online")
    expect(d.locator("#conversations button[data-group] .unread")).to_have_text(str(len(talk)))
    expect(d.locator("#conversations button[data-group] .preview")).to_have_text(f"{bob}: will do")
    d.locator("#conversations button[data-group]").click()
    expect(d.get_by_role("heading", name=TITLE)).to_be_visible()
    expect(d.locator("#messages li .body")).to_have_text(texts)
    expect(d.locator("#messages li .sender")).to_have_text([sender for _, sender, _ in talk])
    screenshot(d, "large-group-caught-up")
    expect(d.locator("#conversations button[data-group] .unread")).to_have_count(0)

    # Dave answers: the others, online, see it live.
    send(d, "see you there")
    for page in (a, b):
        expect(page.locator("#messages li .body").last).to_have_text("see you there")
        expect(page.locator("#messages li.theirs .sender").last).to_have_text(dave)
    assert errors == []
    for context in (alice_ctx, bob_ctx, dave_ctx):
        context.close()
