"""The page as a conversation: follow-up questions carry the finished turns before them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.providers import marker
from tests.support.service import RunningService
from tests.support.upstream_stub import Reply, UpstreamStub


def _ask(page: Page, question: str) -> None:
    page.get_by_label("Question").fill(question)
    page.get_by_label("Question").press("Enter")


def _finished(page: Page, turns: int) -> None:
    expect(page.locator(".turn")).to_have_count(turns)
    expect(page.locator(".turn").last.locator(".stats")).to_contain_text(
        "finished: stop", timeout=10_000
    )


def _conversation(stub: UpstreamStub, key: str) -> list[dict[str, Any]]:
    """The messages the provider got for the question holding `key`, its system part left out."""
    messages: list[dict[str, Any]] = stub.wait_for_request(key).body["messages"]
    assert messages[0]["role"] == "system"
    return messages[1:]


def test_a_follow_up_shows_both_turns_and_the_provider_gets_both(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    first, follow_up = marker(), marker()
    # The follow-up's request holds both markers (the first is in its history):
    # the stub answers with the reply registered first that it finds.
    stub.reply(follow_up, Reply(pieces=["About ", "**2 million**."]))
    stub.reply(first, Reply(pieces=["Paris ", "is the *capital*."]))
    page.goto(openai_service.url)

    _ask(page, first)
    _finished(page, 1)
    _ask(page, f"How many people live there? {follow_up}")
    _finished(page, 2)

    turns = page.locator(".turn")
    expect(turns.locator(".question-text")).to_have_text(
        [first, f"How many people live there? {follow_up}"]
    )
    expect(turns.locator(".answer")).to_have_text(["Paris is the capital.", "About 2 million."])
    expect(turns.last.locator(".answer strong")).to_have_text("2 million")
    messages = _conversation(stub, follow_up)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == first
    assert messages[1]["content"] == "Paris is the *capital*."  # the Markdown, as it came
    assert follow_up in messages[2]["content"]


def test_a_stopped_answer_stays_on_screen_but_is_not_sent_and_new_conversation_forgets(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    stopped, second, after_new = marker(), marker(), marker()
    stub.reply(after_new, Reply(pieces=["Fresh."]))
    stub.reply(second, Reply(pieces=["Complete."]))
    stub.reply(stopped, Reply(pieces=["Half ", "an answer", "never"], stall_after_pieces=2))
    page.goto(openai_service.url)

    _ask(page, stopped)
    expect(page.locator("#answer")).to_have_text("Half an answer")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#stats")).to_have_text("Stopped.")
    _ask(page, second)
    _finished(page, 2)

    first_turn = page.locator(".turn").first
    expect(first_turn.locator(".answer")).to_have_text("Half an answer")
    expect(first_turn.locator(".turn-note")).to_contain_text("sent without it")
    expect(page.locator(".turn").last.locator(".turn-note")).to_be_hidden()
    assert [m["role"] for m in _conversation(stub, second)] == ["user"]

    page.get_by_role("button", name="New conversation").click()
    expect(page.locator(".turn")).to_have_count(0)
    expect(page.get_by_role("region", name="Conversation")).to_be_hidden()
    _ask(page, after_new)
    _finished(page, 1)
    assert [m["role"] for m in _conversation(stub, after_new)] == ["user"]


FIRST_QUESTION = "How do tides work? Show a little code."
FOLLOW_UP = "Why two high tides a day, not one?"
FIRST_ANSWER = [
    "## Tides in short\n\n",
    "The Moon's gravity pulls the ocean into two **bulges**; the Earth turns under them.\n\n",
    "1. The Moon pulls the near side hardest.\n",
    "2. The far side is pulled *least*, so it lags behind.\n",
    "3. The Sun adds or subtracts: spring and neap tides.\n\n",
    "A tide table in a few lines of `python`:\n\n",
    "```python\n",
    "from datetime import timedelta\n\n",
    "def next_high(last_high):\n",
    "    # about 12 h 25 min between high tides\n",
    "    return last_high + timedelta(hours=12, minutes=25)\n",
    "```\n\n",
    "More at [NOAA](https://oceanservice.noaa.gov/education/tutorial_tides/).",
]
FOLLOW_UP_ANSWER = [
    "Because there are **two bulges**: one facing the Moon and one opposite it.\n\n",
    "- Each place passes through both in a day.\n",
    "- So most coasts see two highs and two lows.",
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_a_markdown_conversation(
    page: Page,
    openai_service: RunningService,
    stub: UpstreamStub,
    scheme: str,
    tmp_path: Path,
) -> None:
    """Not an assertion on pixels: two turns with Markdown, to look at in both schemes."""
    folder = Path(os.environ.get("QA_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    stub.reply(FOLLOW_UP, Reply(pieces=FOLLOW_UP_ANSWER))
    stub.reply(FIRST_QUESTION, Reply(pieces=FIRST_ANSWER))
    page.set_viewport_size({"width": 900, "height": 900})
    page.emulate_media(color_scheme=scheme)
    page.goto(openai_service.url)

    _ask(page, FIRST_QUESTION)
    _finished(page, 1)
    _ask(page, FOLLOW_UP)
    _finished(page, 2)

    expect(page.locator(".turn").first.locator("pre code")).to_be_visible()
    page.screenshot(path=folder / f"conversation-{scheme}.png", full_page=True)
