"""The page and an EventSource in Chromium against a service with API keys on."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import open_page
from tests.support.providers import marker, provider_settings
from tests.support.service import RunningService, run_service
from tests.support.upstream_stub import Reply, UpstreamStub

KEY = f"qa-page-{secrets.token_urlsafe(24)}"
WRONG = f"qa-nope-{secrets.token_urlsafe(24)}"
REFUSED = ("Failed to load resource: the server responded with a status of 401 (Unauthorized)",)
PIECES = ["With ", "a <b>key</b>, ", "it answers."]


@pytest.fixture(scope="module")
def keyed(stub: UpstreamStub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    workdir: Path = tmp_path_factory.mktemp("keyed-page")
    settings = {**provider_settings("openai", stub), "QA_API_KEYS": KEY}
    with run_service(settings, workdir) as service:
        yield service


def test_the_page_asks_for_a_key_on_401_keeps_it_for_the_tab_and_answers(
    browser: Browser, keyed: RunningService, stub: UpstreamStub
) -> None:
    question = marker()
    stub.reply(question, Reply(pieces=PIECES))
    with open_page(browser, expected_errors=REFUSED) as page:
        page.goto(keyed.url)
        page.get_by_label("Question").fill(question)
        page.get_by_label("Question").press("Enter")

        key_field = page.get_by_label("API key")
        expect(key_field).to_be_visible()
        expect(key_field).to_be_focused()
        assert key_field.get_attribute("type") == "password"
        expect(page.locator("#error-title")).to_have_text("This service needs an API key.")
        expect(page.locator("#error-code")).to_have_text("unauthorized")

        key_field.fill(WRONG)
        key_field.press("Enter")
        expect(page.locator("#key-help")).to_contain_text("refused that key")
        expect(key_field).to_be_visible()

        key_field.fill(KEY)
        page.get_by_role("button", name="Use key").click()
        expect(page.locator("#stats")).to_contain_text("finished: stop", timeout=15_000)
        expect(page.locator("#answer")).to_have_text("".join(PIECES))
        expect(key_field).to_be_hidden()
        expect(page.locator("#error")).to_be_hidden()
        stored = page.evaluate("() => sessionStorage.getItem('qa-service.api-key')")
        assert stored == KEY

        # A reload in the same tab keeps the key: the next question just works.
        again = marker()
        stub.reply(again, Reply(pieces=PIECES))
        page.reload()
        page.get_by_label("Question").fill(again)
        page.get_by_label("Question").press("Enter")
        expect(page.locator("#stats")).to_contain_text("finished: stop", timeout=15_000)
        expect(key_field).to_be_hidden()
    # The refused asks never reached the provider; each accepted one did, once.
    assert len(stub.exchanges_for(question)) == 1
    assert len(stub.exchanges_for(again)) == 1


EVENT_SOURCE_WITH_A_TICKET = """async ([query, key]) => {
  const { requestTicket, answerUrl } = await import("/qa-client.js");
  const { ticket } = await requestTicket(query, { apiKey: key });
  const url = answerUrl(query, { ticket });
  return await new Promise((resolve) => {
    let text = "";
    const source = new EventSource(url);
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if ("text" in event) text += event.text;
      if ("done" in event || "error" in event) {
        source.close();
        resolve({ text, last: Object.keys(event)[0], ticketInUrl: url.includes(ticket) });
      }
    };
  });
}"""


def test_an_event_source_starts_an_answer_with_a_ticket_under_the_csp(
    browser: Browser, keyed: RunningService, stub: UpstreamStub
) -> None:
    question = marker()
    stub.reply(question, Reply(pieces=PIECES))
    with open_page(browser) as page:
        page.goto(keyed.url)
        result = page.evaluate(EVENT_SOURCE_WITH_A_TICKET, [question, KEY])
    assert result == {"text": "".join(PIECES), "last": "done", "ticketInUrl": True}
    assert len(stub.exchanges_for(question)) == 1
