"""A real browser for the UI tests: Playwright driving Debian's Chromium (Playwright cannot download its own here;
``scripts/services.sh install`` installs Chromium).

Where no Chromium is installed the browser tests are skipped, except in CI (``CI=true``), where they must run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

# Headless, and nothing that calls out: this machine's network is closed, and Chromium's background requests
# would fail, many at a time.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # a loaded machine renders Airflow's UI slowly; every wait is on a condition


def chromium() -> str:
    """Chromium's executable, or skip (fail in CI) naming how to install it."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        reason = "no Chromium: run scripts/services.sh install (Debian's chromium package)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser tests, but {reason}", pytrace=False)
        pytest.skip(reason)
    return found


@contextmanager
def browser_page(**context: Any) -> Iterator[Page]:
    """A page of a fresh browser context (no cookies), 1440 px wide; ``context`` goes to ``new_context``."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1440, "height": 1000}, **context).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def log_in(page: Page, base_url: str, username: str, password: str) -> None:
    """Sign in to Airflow through its login form, as a person does."""
    page.goto(f"{base_url}/auth/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/auth/login" not in url)
