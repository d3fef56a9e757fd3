"""Chromium for browser tests: Debian's build, driven by Playwright."""

from pathlib import Path

import pytest
from django.db import connections

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: CI runs as root in a container, where Chromium's sandbox cannot
# start. The rest keeps a test browser from phoning home or updating itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page(monkeypatch):
    """A fresh Chromium page, closed with its browser after the test."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing. Install it: apt-get update && apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an asyncio loop in this thread, so Django
    # takes the test's own ORM calls for calls from async code and refuses
    # them. They are plain blocking calls; say so, for this test only.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1680, "height": 1000})
        context.set_default_timeout(15_000)
        try:
            yield context.new_page()
        finally:
            browser.close()
            # ORM calls made while Playwright's loop runs get their own
            # connection (Django keeps connections per async context); close
            # it here, in that context, or the test database cannot be dropped.
            connections.close_all()
