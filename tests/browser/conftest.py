"""Headless Debian Chromium (/usr/bin/chromium) driven by Playwright against the real service.

Run in their own pytest invocation: sync Playwright and pytest-asyncio do not
share an event loop.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.support.service import RunningService, run_service

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google's
# hosts, which this machine's closed network refuses.
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name == "browser":
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Debian chromium is needed: ./scripts/test.sh installs it")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def open_page(
    browser: Browser, *, expected_errors: Collection[str] = (), **context_options: Any
) -> Iterator[Page]:
    """A fresh page in its own context; fails if the page logs a console error.

    `expected_errors`: exact console error texts that a test causes on purpose.
    """
    context = browser.new_context(**context_options)
    opened = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and message.text not in expected_errors:
            problems.append(message.text)

    opened.on("console", on_console)
    opened.on("pageerror", lambda error: problems.append(str(error)))
    yield opened
    context.close()
    assert problems == [], problems


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # The clipboard, for the page's copy buttons (and the tests that read what they copied).
    with open_page(browser, permissions=["clipboard-read", "clipboard-write"]) as opened:
        yield opened


def copied_answer(page: Page) -> str:
    """The latest answer's Markdown source, as its copy button puts it on the clipboard."""
    button = page.locator(".turn").last.get_by_role("button", name="Copy answer")
    button.click()
    expect(page.locator(".turn").last.locator(".copy-answer")).to_have_text("Copied")
    copied: str = page.evaluate("() => navigator.clipboard.readText()")
    return copied


@pytest.fixture(scope="session")
def demo_service(workdir: Path) -> Iterator[RunningService]:
    settings = {"QA_DEMO_CHUNK_DELAY_MS": "5", "QA_DEMO_PAUSE_SECONDS": "30"}
    with run_service(settings, workdir) as service:
        yield service
