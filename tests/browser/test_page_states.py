"""The page's states in Chromium, against a real provider (the stub) and the demo.

The scenario menu, the notice and the limits come from the server; a wait
shows a spinner and the seconds; bad questions are caught inline; errors say
what happened in words, with the code and a request id to copy. Screenshots
of each state, light and dark, go to $QA_SCREENSHOT_DIR when it is set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.support.metrics import settled_metrics
from tests.support.providers import marker
from tests.support.service import RunningService
from tests.support.upstream_stub import Reply, UpstreamStub


def _open(page: Page, service: RunningService) -> None:
    page.goto(service.url)
    # The page is ready once /readyz has filled in the provider line.
    expect(page.locator("#provider")).to_contain_text("Answering with")


def _ask(page: Page, question: str) -> None:
    page.get_by_label("Question").fill(question)
    page.get_by_label("Question").press("Enter")


def test_a_real_provider_shows_no_scenario_menu(page: Page, openai_service: RunningService) -> None:
    page.goto(openai_service.url)
    # Once the prompts are listed, the page has heard from the server.
    expect(page.locator("#prompt option").first).to_be_attached()

    # The old bug: `label { display: block }` beat the `hidden` attribute.
    expect(page.get_by_label("Demo scenario")).to_be_hidden()
    expect(page.locator("#scenario-field")).to_be_hidden()
    assert page.locator("#scenario-field").bounding_box() is None
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.locator("#provider")).to_have_text("Answering with openai · gpt-4o-mini")


def test_the_demo_shows_its_notice_and_the_servers_scenarios_at_load(
    page: Page, demo_service: RunningService
) -> None:
    ready = httpx.get(f"{demo_service.url}/readyz").json()
    _open(page, demo_service)

    # Before any question: no layout shift when the first answer starts.
    expect(page.get_by_role("status")).to_have_text(ready["notice"])
    expect(page.locator("#provider")).to_have_text("Answering with demo · demo-writer")
    expect(page.get_by_label("Demo scenario")).to_be_visible()
    values = page.locator("#scenario option").evaluate_all("(os) => os.map((o) => o.value)")
    assert values == ready["scenarios"]


def test_a_wait_shows_a_spinner_and_the_seconds_before_text_and_in_silences(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["first ", "second"], first_delay=2.2, piece_delay=2.2))
    _open(page, openai_service)
    _ask(page, key)

    waiting = page.locator("#waiting")
    expect(waiting).to_be_visible()
    expect(waiting).to_contain_text("Waiting for the first words… 0 s")
    expect(waiting).to_contain_text("Waiting for the first words… 1 s", timeout=3_000)
    expect(page.locator("#answer")).to_have_text("first ", timeout=5_000)
    expect(waiting).to_be_hidden()
    expect(waiting).to_contain_text("The model paused… 1 s", timeout=3_000)
    expect(page.locator("#stats")).to_contain_text("finished: stop", timeout=5_000)
    expect(waiting).to_be_hidden()


def test_a_blank_question_is_caught_on_the_page_and_never_sent(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    _open(page, openai_service)
    settled_metrics(openai_service.url)  # no earlier answer can reach the stub meanwhile
    before = len(stub.exchanges)

    _ask(page, "   ")

    problem = page.locator("#question-problem")
    expect(problem).to_have_text("Type a question first.")
    expect(page.get_by_label("Question")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Question").press_sequentially("tides")
    expect(problem).to_be_hidden()
    assert len(stub.exchanges) == before


def test_a_too_long_question_is_counted_and_caught_as_it_is_typed(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    limit = httpx.get(f"{openai_service.url}/readyz").json()["max_query_chars"]
    _open(page, openai_service)
    counter = page.locator("#counter")
    expect(counter).to_have_text(f"0 / {limit}")
    settled_metrics(openai_service.url)  # no earlier answer can reach the stub meanwhile
    before = len(stub.exchanges)

    page.get_by_label("Question").fill("🌱" * limit)  # code points, as the service counts
    expect(counter).to_have_text(f"{limit} / {limit}")
    expect(page.locator("#question-problem")).to_be_hidden()
    page.get_by_label("Question").press("End")
    page.get_by_label("Question").press_sequentially("x")

    expect(counter).to_have_text(f"{limit + 1} / {limit}")
    expect(counter).to_have_class(re.compile(r"\bover\b"))
    expect(page.locator("#question-problem")).to_have_text(
        f"1 character over the limit of {limit}."
    )
    page.get_by_label("Question").press("Enter")
    expect(page.locator("#question-problem")).to_be_visible()
    expect(page.locator(".turn")).to_have_count(0)  # never asked: no turn in the thread
    assert len(stub.exchanges) == before


def test_an_error_says_what_happened_with_its_code_and_a_request_id_to_copy(
    page: Page, openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["before ", "the ", "cut"], cut_after_pieces=2))
    _open(page, openai_service)
    _ask(page, key)

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The answer was cut off.")
    expect(alert).to_contain_text("The model provider's stream was cut off.")
    expect(page.locator("#error-code")).to_have_text("upstream_interrupted")
    request_id = page.locator("#error-request-id").text_content() or ""
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert openai_service.answer_record(request_id)["error_code"] == "upstream_interrupted"

    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.locator("#copy-id")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == request_id


def test_the_api_docs_render_offline_under_the_csp(
    page: Page, openai_service: RunningService
) -> None:
    page.goto(f"{openai_service.url}/docs")

    expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=10_000)
    paths = set(page.locator(".opblock-summary-path").all_text_contents())
    assert {"/ai_write", "/readyz", "/prompts"} <= paths


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("provider", ["openai", "demo"])
def test_screenshots_of_each_state(
    request: pytest.FixtureRequest,
    page: Page,
    stub: UpstreamStub,
    provider: str,
    scheme: str,
    tmp_path: Path,
) -> None:
    """Not an assertion on pixels: the states a person must be able to read, to look at."""
    service: RunningService = request.getfixturevalue(f"{provider}_service")
    folder = Path(os.environ.get("QA_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 900, "height": 900})
    page.emulate_media(color_scheme=scheme)

    def shot(state: str) -> None:
        page.screenshot(path=folder / f"{provider}-{scheme}-{state}.png", full_page=True)

    _open(page, service)
    shot("idle")
    _ask(page, " ")
    shot("blank")

    key, cut = marker(), marker()
    # The cut question follows up on the first, so its request holds both
    # markers: the stub answers with the reply registered first that it finds.
    stub.reply(cut, Reply(pieces=["half ", "an ", "answer"], cut_after_pieces=2))
    stub.reply(key, Reply(pieces=["The tide ", "rises."], first_delay=1.5))
    if provider == "demo":
        page.get_by_label("Demo scenario").select_option("slow_first_token")
    _ask(page, key)
    expect(page.locator("#waiting")).to_contain_text("1 s", timeout=3_000)
    shot("waiting")
    if provider == "demo":
        page.keyboard.press("Escape")
        page.get_by_label("Demo scenario").select_option("error_mid_stream")
        _ask(page, key)
    else:
        expect(page.locator("#stats")).to_contain_text("finished", timeout=5_000)
        shot("answered")
        _ask(page, cut)
    expect(page.get_by_role("alert")).to_be_visible(timeout=15_000)
    shot("error")
