"""Debian's headless Chromium for the page tests, as they all launch it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import IN_CI

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "SCREENSHOT_DIR", "chromium", "require_chromium"]

CHROMIUM = "/usr/bin/chromium"
# Headless in a container as root, and nothing of Chromium's own traffic (updates, sync,
# safe-browsing lists) that would wait on a network the tests forbid.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Set to a directory to keep the pages' screenshots there (docs/images/ for the README).
SCREENSHOT_DIR = os.environ.get("MSGSYNC_TEST_SCREENSHOT_DIR")


def require_chromium() -> None:
    """Called at a page test module's import: without Chromium its tests are skipped, and
    under CI that is a failure."""
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(
                f"{CHROMIUM} is required under CI (apt-get install chromium)", pytrace=False
            )
        pytest.skip(f"{CHROMIUM} not installed", allow_module_level=True)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, launched as every page test and measurement launches it.

    Playwright is imported here, not at this module's import: a page test module calls
    require_chromium() first, so that a machine without Chromium skips it cleanly."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
