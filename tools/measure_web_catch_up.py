"""Measure the web client's catch-up in Chromium: a device that was offline while 1,000
messages arrived comes back online; the figure is the time from the page's `online` event
to the conversation list showing all 1,000 as unread, i.e. every message fetched, written
to IndexedDB with its cursor in one transaction, and drawn. A measurement, not a test: run
it on a quiet machine (the goal is < 500 ms).

    ./tools/uv run python tools/measure_web_catch_up.py [--messages 1000] [--runs 5]

Needs PostgreSQL as the tests do (MSGSYNC_TEST_PG_ADMIN_URL) and /usr/bin/chromium."""

from __future__ import annotations

import argparse
import statistics
import uuid

import httpx
from playwright.sync_api import Browser

from app.db.migrations import upgrade_to_head
from tests.browser import chromium
from tests.conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database
from tests.factories import PASSWORD
from tests.server import running_server

# Registered before the app's own scripts: t0 is the moment the browser says online; the
# observer stops the clock when the badge says every message is here.
PROBE = """
window.__catchUp = null;
addEventListener("online", () => {
  const t0 = performance.now();
  const want = String(window.__expect);
  const check = () => {
    const badge = document.querySelector("#conversations .unread");
    if (badge && badge.textContent === want) {
      window.__catchUp = performance.now() - t0;
      observer.disconnect();
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.body, { childList: true, subtree: true, characterData: true });
});
"""


def user(url: str, prefix: str) -> str:
    user_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    body = {"user_id": user_id, "password": PASSWORD}
    httpx.post(f"{url}/users", json=body).raise_for_status()
    return user_id


def run_once(browser: Browser, url: str, count: int) -> float:
    alice, bob = user(url, "alice"), user(url, "bob")
    login = httpx.post(f"{url}/login", json={"user_id": alice, "password": PASSWORD})
    headers = {"authorization": f"Bearer {login.json()['access_token']}"}
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script(PROBE)
    page.goto(f"{url}/app")
    page.get_by_label("User id").fill(bob)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("status").filter(has_text="Online").wait_for()
    page.evaluate(f"window.__expect = {count}")
    context.set_offline(True)
    page.get_by_role("status").filter(has_text="Offline").wait_for()
    with httpx.Client(base_url=url, headers=headers) as http:
        for n in range(count):
            http.post("/messages", json={"to": bob, "body": f"catch-up {n}"}).raise_for_status()
    context.set_offline(False)
    # Polled from here: the page's policy forbids the string eval of wait_for_function, and
    # the figure is taken inside the page, so the polling does not add to it.
    elapsed: float | None = None
    for _ in range(1200):
        elapsed = page.evaluate("() => window.__catchUp")
        if elapsed is not None:
            break
        page.wait_for_timeout(100)
    assert elapsed is not None, "the page never showed every message"
    context.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    database = create_pg_database(PG_ADMIN_URL)
    try:
        upgrade_to_head(database)
        with running_server(database) as server, chromium() as browser:
            figures = [run_once(browser, server.url, args.messages) for _ in range(args.runs)]
    finally:
        drop_pg_database(PG_ADMIN_URL, database)
    shown = ", ".join(f"{f:.0f}" for f in figures)
    print(
        f"catch-up of {args.messages} messages, online to all drawn (ms): "
        f"median {statistics.median(figures):.0f}, runs [{shown}]"
    )


if __name__ == "__main__":
    main()
