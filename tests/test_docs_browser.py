"""/docs and /redoc in a real headless Chromium with no network beyond the server itself."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser import SCREENSHOT_DIR, chromium, require_chromium
from tests.factories import PASSWORD, new_user_id
from tests.server import Server, running_server

pytestmark = [pytest.mark.browser, pytest.mark.server]

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}

require_chromium()

from playwright.sync_api import Browser, Page, Route, expect  # noqa: E402


@dataclass
class Offline:
    """A browser page that may reach only the server under test; the rest is refused."""

    page: Page
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the console's, CSP violations included

    def route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort()


@pytest.fixture(scope="module")
def server(postgresql_url: str) -> Iterator[Server]:
    with running_server(postgresql_url) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # A guard for a loaded machine (the Swagger bundle is 1.5 MB to parse), not a measure:
    # assertions retry until the page shows what they expect, for up to this long.
    expect.set_options(timeout=30_000)
    with chromium() as browser:
        yield browser


@pytest.fixture
def offline(browser: Browser) -> Iterator[Offline]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    offline = Offline(context.new_page())
    context.route("**/*", offline.route)
    offline.page.on(
        "console", lambda m: offline.errors.append(m.text) if m.type == "error" else None
    )
    yield offline
    context.close()


def operations(server: Server) -> set[tuple[str, str]]:
    document = httpx.get(f"{server.url}/openapi.json").json()
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def token(server: Server) -> str:
    user_id = new_user_id("docs")
    body = {"user_id": user_id, "password": PASSWORD}
    assert httpx.post(f"{server.url}/users", json=body).status_code == 201
    answer = httpx.post(f"{server.url}/login", json=body)
    assert answer.status_code == 201
    access_token: str = answer.json()["access_token"]
    return access_token


def test_swagger_lists_every_operation_and_runs_sync_with_a_token(
    server: Server, offline: Offline, tmp_path: Path
) -> None:
    page = offline.page
    page.goto(f"{server.url}/docs")
    summaries = page.locator(".opblock .opblock-summary")
    expected = operations(server)
    expect(summaries).to_have_count(len(expected))
    shown = {
        (
            summary.locator(".opblock-summary-method").inner_text().strip(),
            summary.locator(".opblock-summary-path").get_attribute("data-path"),
        )
        for summary in summaries.all()
    }
    assert shown == expected

    # Authorize with a real token from /login: the bearer scheme in the OpenAPI offers it.
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".dialog-ux")
    dialog.locator("input").fill(token(server))
    dialog.locator("button.authorize").click()
    dialog.locator("button.btn-done").click()
    expect(page.locator(".auth-wrapper button.authorize.locked")).to_be_visible()

    if SCREENSHOT_DIR:  # the README's picture: Authorize locked, the operations listed
        page.mouse.move(0, 0)  # no hover highlight on whichever row the pointer was over
        page.screenshot(path=Path(SCREENSHOT_DIR) / "docs.png")

    # GET /sync: Try it out, Execute, and the live answer is a 200 sync page.
    sync = page.locator(".opblock-get").filter(
        has=page.locator('.opblock-summary-path[data-path="/sync"]')
    )
    sync.locator(".opblock-summary").click()
    sync.locator("button.try-out__btn").click()
    sync.locator("button.execute").click()
    live = sync.locator(".live-responses-table")
    expect(live.locator("tbody .response-col_status")).to_have_text("200")
    expect(live.locator("tbody .response-col_description")).to_contain_text('"next_since"')
    page.screenshot(path=tmp_path / "docs-sync.png")  # kept by pytest for a failing run

    assert (offline.refused, offline.errors) == ([], [])


def test_swagger_samples_show_plausible_numbers(server: Server, offline: Offline) -> None:
    """The samples Swagger UI shows come from the document's examples: a version looks like
    one (not 2^63-1, the bound, which a browser prints as 9223372036854776000)."""
    page = offline.page
    page.goto(f"{server.url}/docs")
    for path in ("/messages", "/ack", "/sync"):
        operation = page.locator(".opblock").filter(
            has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
        )
        operation.locator(".opblock-summary").click()
        samples = operation.locator(".responses-wrapper .highlight-code")
        expect(samples.first).to_be_visible()
        text = " ".join(samples.all_inner_texts())
        assert '"version": 7' in text or '"acked_version": 7' in text, (path, text)
        assert "922337" not in text, (path, text)
    assert (offline.refused, offline.errors) == ([], [])


def test_redoc_renders_every_operation(server: Server, offline: Offline) -> None:
    page = offline.page
    page.goto(f"{server.url}/redoc")
    sections = page.locator('[data-section-id^="operation/"]')
    expected = operations(server)
    expect(sections).to_have_count(len(expected))
    text = page.locator(".api-content").inner_text()
    for method, path in expected:
        assert path in text, f"{method} {path} not rendered"
    # ReDoc's sidebar logo, which its bundle would fetch from its vendor's CDN (and the
    # policy would block, with a console error), is served without that address.
    expect(page.locator('img[alt="redocly logo"]')).to_have_count(1)
    assert "cdn.redoc.ly" not in page.content()
    assert (offline.refused, offline.errors) == ([], [])
