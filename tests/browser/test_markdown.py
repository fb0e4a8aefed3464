"""Answers on the page are Markdown, rendered while they stream, and nothing in them runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import copied_answer, open_page
from tests.support.providers import marker
from tests.support.service import RunningService
from tests.support.upstream_stub import Reply, UpstreamStub

# Each hostile line would set window.__pwned if it ever ran.
MARKDOWN = [
    "# Tides\n\n",
    "The sea **rises** and *falls*:\n\n",
    "- the moon\n",
    "- the sun\n\n",
    "```python\n",
    "print('high <tide>')\n",
    "```\n\n",
    "Read [more](https://example.org/tides).\n\n",
    "<script>window.__pwned = 1</script>\n\n",
    '<img src=x onerror="window.__pwned = 2">\n\n',
    "[click](javascript:window.__pwned=3) <javascript:window.__pwned=4>\n\n",
    "[home](/admin) [page](data:text/html,hi)\n\n",
    "![pixel](https://example.org/pixel.png)\n\n",
]

# Before the page's own script: what a payload would leave behind, if it ran.
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) =>
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`));
"""
PWNED = "() => window.__pwned"


@pytest.fixture
def watched(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A page that records dialogs (alert, confirm, ...) and CSP violations."""
    with open_page(browser, permissions=["clipboard-read", "clipboard-write"]) as page:
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.add_init_script(WATCH)
        yield page, dialogs


def _ask(page: Page, service: RunningService, question: str) -> None:
    page.goto(service.url)
    page.get_by_label("Question").fill(question)
    page.get_by_label("Question").press("Enter")


def test_markdown_renders_formatted_while_streaming_and_nothing_in_it_runs(
    watched: tuple[Page, list[str]], openai_service: RunningService, stub: UpstreamStub
) -> None:
    page, dialogs = watched
    key = marker()
    # Every piece, then the stream holds open: whatever is checked is mid-stream.
    pieces = [*MARKDOWN, "never sent"]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.02, stall_after_pieces=len(MARKDOWN)))
    _ask(page, openai_service, key)

    answer = page.locator("#answer")
    expect(answer).to_contain_text("pixel", timeout=10_000)  # the last piece is on screen
    expect(answer).to_have_attribute("aria-busy", "true")
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()

    expect(answer.locator("h1")).to_have_text("Tides")
    expect(answer.locator("strong")).to_have_text("rises")
    expect(answer.locator("em")).to_have_text("falls")
    expect(answer.locator("ul > li")).to_have_text(["the moon", "the sun"])
    expect(answer.locator("pre > code.language-python")).to_have_text("print('high <tide>')\n")
    # Only the two safe links are links: the http one, and the image shown as a link.
    links = answer.locator("a").evaluate_all(
        "(links) => links.map((a) => [a.textContent, a.href, a.rel, a.target])"
    )
    assert links == [
        ["more", "https://example.org/tides", "noopener noreferrer", "_blank"],
        ["pixel", "https://example.org/pixel.png", "noopener noreferrer", "_blank"],
    ]
    # The markup is text; javascript:, data: and relative links stay text.
    assert answer.locator("script, img, iframe, object, [onerror]").count() == 0
    expect(answer).to_contain_text("<script>window.__pwned = 1</script>")
    expect(answer).to_contain_text('<img src=x onerror="window.__pwned = 2">')
    expect(answer).to_contain_text("[click](javascript:window.__pwned=3)")
    expect(answer).to_contain_text("<javascript:window.__pwned=4>")
    expect(answer).to_contain_text("[home](/admin) [page](data:text/html,hi)")
    assert page.evaluate(PWNED) is None
    assert dialogs == []
    assert page.evaluate("() => window.__violations") == []

    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#stats")).to_have_text("Stopped.")
    assert page.evaluate(PWNED) is None
    assert page.evaluate("() => window.__violations") == []


def test_the_copy_button_puts_the_exact_markdown_source_on_the_clipboard(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    # What rendering changes (emphasis, entities, a soft break, trailing space) is copied as sent.
    pieces = [*MARKDOWN, "a &amp; b\r\nline  \n", "\u2028end 🌱 "]
    stub.reply(key, Reply(pieces=pieces))
    _ask(page, openai_service, key)
    expect(page.locator("#stats")).to_contain_text("finished: stop", timeout=10_000)

    assert copied_answer(page) == "".join(pieces)
    expect(page.locator(".copy-answer")).to_have_text("Copy answer", timeout=5_000)


# Counts the answer's renders (each replaces its children) and the frames
# painted while it streams: one render per frame at most, never one per piece.
COUNT_RENDERS = """() => {
  window.__renders = 0;
  window.__frames = 0;
  const tick = () => { window.__frames += 1; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  new MutationObserver((records) => {
    for (const record of records) {
      if (record.target.classList?.contains("answer") && record.removedNodes.length) {
        window.__renders += 1;
      }
    }
  }).observe(document.getElementById("turns"), { childList: true, subtree: true });
}"""


def test_a_burst_of_pieces_is_rendered_once_a_frame_not_once_a_piece(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [f"- item {n}\n" for n in range(400)]
    stub.reply(key, Reply(pieces=pieces))
    page.goto(openai_service.url)
    page.evaluate(COUNT_RENDERS)
    page.get_by_label("Question").fill(key)
    page.get_by_label("Question").press("Enter")
    expect(page.locator("#stats")).to_contain_text("finished: stop", timeout=10_000)

    expect(page.locator("#answer li")).to_have_count(len(pieces))
    counts: dict[str, Any] = page.evaluate("() => ({r: window.__renders, f: window.__frames})")
    # The last render (at the end) needs no frame of its own.
    assert 0 < counts["r"] <= counts["f"] + 1, counts
    assert counts["r"] < len(pieces) / 4, counts
