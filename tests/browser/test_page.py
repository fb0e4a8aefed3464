"""The demo page and the JS client in a real browser, against the real service."""

from __future__ import annotations

import time
from typing import Any

from playwright.sync_api import Page, expect

from qa_service.wire.native import RECONNECT_MS
from tests.browser.conftest import copied_answer
from tests.integration.test_answers import HARD_PIECES
from tests.support import unicode_recording
from tests.support.providers import marker
from tests.support.service import RunningService
from tests.support.upstream_stub import Reply, UpstreamStub

# The latest answer's length on screen after each change to the thread.
RECORD_GROWTH = """() => {
  window.__lengths = [];
  new MutationObserver(() => {
    const answer = document.getElementById("answer");
    if (answer) window.__lengths.push(answer.textContent.length);
  }).observe(document.getElementById("turns"), { childList: true, subtree: true });
}"""


def _ask(page: Page, service: RunningService, question: str) -> None:
    page.goto(service.url)
    page.get_by_label("Question").fill(question)
    page.get_by_label("Question").press("Enter")


def test_a_typed_question_streams_in_several_steps_and_ends_exact(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [*HARD_PIECES, *[f" word{n}" for n in range(20)]]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.03))
    page.goto(openai_service.url)
    page.evaluate(RECORD_GROWTH)

    page.get_by_label("Question").fill(key)
    page.get_by_label("Question").press("Enter")

    expect(page.locator("#stats")).to_contain_text("finished: stop", timeout=15_000)
    lengths: list[int] = page.evaluate("() => window.__lengths")
    # The Markdown source arrived whole and in order; what is on screen is it rendered.
    assert copied_answer(page) == "".join(pieces)
    final = len(page.locator("#answer").text_content() or "")
    growing = sorted({length for length in lengths if 0 < length < final})
    assert len(growing) >= 5, lengths
    expect(page.locator("#meta")).to_contain_text("openai · gpt-4o-mini")
    expect(page.locator("#stats")).to_contain_text("21 in / 4 out tokens")
    expect(page.locator("#ask")).to_be_enabled()


def test_stop_aborts_the_fetch_and_the_upstream_request_closes(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=[f"w{n} " for n in range(400)], piece_delay=0.05))
    _ask(page, openai_service, key)
    expect(page.locator("#answer")).to_contain_text("w3 ")

    page.get_by_role("button", name="Stop").click()
    stopped_at = time.monotonic()

    expect(page.locator("#stats")).to_have_text("Stopped.")
    exchange = stub.wait_closed(key)
    assert exchange.client_closed_at - stopped_at < 1.0
    assert not exchange.completed
    expect(page.get_by_role("button", name="Ask")).to_be_enabled()
    expect(page.locator("#error")).to_be_hidden()


def test_an_error_mid_stream_shows_a_message_and_a_retry(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["before ", "the ", "cut ", "never"], cut_after_pieces=3))
    _ask(page, openai_service, key)

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The model provider's stream was cut off.")
    expect(page.locator("#error-code")).to_have_text("upstream_interrupted")
    expect(page.locator("#answer")).to_have_text("before the cut")

    page.get_by_role("button", name="Try again").click()
    deadline = time.monotonic() + 5
    while len(stub.exchanges_for(key)) < 2:
        assert time.monotonic() < deadline, "the retry never reached the provider"
        time.sleep(0.01)
    expect(page.locator("#error-code")).to_have_text("upstream_interrupted")


def test_model_markup_is_shown_literally_and_never_runs(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [
        "<script>window.__pwned = 1</script>",
        ' <img src=x onerror="window.__pwned = 2">',
        " &amp; &lt;b&gt; <b>bold</b>",
        '<a href="javascript:window.__pwned=3">link</a>',
    ]
    stub.reply(key, Reply(pieces=pieces))
    _ask(page, openai_service, key)

    expect(page.locator("#stats")).to_contain_text("finished")
    # Markdown's entities are decoded (&amp; is "&"); every tag stays text, in one paragraph.
    shown = "".join(pieces).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    expect(page.locator("#answer")).to_have_text(shown)
    tags = page.locator("#answer *").evaluate_all("(nodes) => nodes.map((n) => n.localName)")
    assert tags == ["p"]
    assert page.evaluate("() => window.__pwned") is None


def test_event_source_gets_the_same_text_and_does_not_reconnect(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=HARD_PIECES))
    page.goto(openai_service.url)

    # README.md's EventSource snippet ("Use it from your client"): close on the terminal event.
    received: dict[str, Any] = page.evaluate(
        """(query) => new Promise((resolve) => {
          let text = "", opens = 0;
          const source = new EventSource("/ai_write?query=" + encodeURIComponent(query));
          source.onopen = () => opens++;
          // The wait's deadline: evaluate() itself would wait for ever.
          setTimeout(() => resolve({ text, opens, end: "no terminal event in 15 s" }), 15000);
          source.onmessage = (message) => {
            const event = JSON.parse(message.data);
            if ("text" in event) text += event.text;
            else if ("done" in event || "error" in event) {
              source.close();
              resolve({ text, opens, end: Object.keys(event)[0], state: source.readyState });
            }
          };
        })""",
        key,
    )
    # Twice the reconnection delay the service sends with its first event: a
    # reconnecting EventSource would have asked again by now.
    time.sleep(2 * RECONNECT_MS / 1000)

    assert received == {"text": "".join(HARD_PIECES), "opens": 1, "end": "done", "state": 2}
    assert len(stub.exchanges_for(key)) == 1


def test_keyboard_only_use_with_labels_and_live_region(
    page: Page, demo_service: RunningService
) -> None:
    page.goto(demo_service.url)
    question = page.get_by_label("Question")
    expect(question).to_be_focused()
    for label in ("Style", "Demo scenario"):
        expect(page.get_by_label(label)).to_be_visible()

    page.get_by_label("Demo scenario").select_option("slow_first_token")
    question.fill("tides")
    question.press("Enter")
    expect(page.locator("#answer")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#answer")).to_have_attribute("aria-busy", "true")
    expect(question).to_be_focused()
    page.keyboard.press("Escape")

    expect(page.locator("#stats")).to_have_text("Stopped.")
    expect(page.locator("#answer")).to_have_attribute("aria-busy", "false")


def test_demo_scenarios_render_exactly_and_show_the_demo_notice(
    page: Page, demo_service: RunningService
) -> None:
    page.goto(demo_service.url)
    page.get_by_label("Demo scenario").select_option("unicode")
    page.get_by_label("Question").fill(unicode_recording.QUERY)
    page.get_by_role("button", name="Ask").click()

    expect(page.locator("#stats")).to_contain_text("finished", timeout=15_000)
    assert copied_answer(page) == unicode_recording.TEXT
    expect(page.get_by_role("status")).to_contain_text("keyless demo provider")


def test_demo_error_scenario_offers_a_retry(page: Page, demo_service: RunningService) -> None:
    page.goto(demo_service.url)
    page.get_by_label("Demo scenario").select_option("error_mid_stream")
    page.get_by_label("Question").fill("tides")
    page.get_by_role("button", name="Ask").click()

    expect(page.get_by_role("alert")).to_contain_text("upstream_interrupted")
    expect(page.get_by_role("button", name="Try again")).to_be_visible()
