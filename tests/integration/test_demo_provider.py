"""The keyless demo provider over real HTTP: its scenarios and the keep-alive comments."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.support import unicode_recording
from tests.support.service import RunningService, SharedServices
from tests.support.sse import read_stream

PAUSE = 0.6
KEEPALIVE = 0.15


@pytest.fixture
def demo_service(shared_services: SharedServices) -> RunningService:
    settings = {
        "QA_DEMO_CHUNK_DELAY_MS": "1",
        "QA_DEMO_PAUSE_SECONDS": str(PAUSE),
        "QA_KEEPALIVE_SECONDS": str(KEEPALIVE),
        # The stream starts at once, so the slow first token is bridged on the wire.
        "QA_FIRST_TEXT_HOLD_SECONDS": "0",
    }
    return shared_services.one(settings)


def test_demo_answer_says_it_is_a_demo(demo_service: RunningService) -> None:
    stream = read_stream(demo_service.url, params={"query": "photosynthesis"})

    meta = stream.events[0]["meta"]
    assert meta["provider"] == "demo"
    assert meta["demo_fallback"] is True
    assert "demo" in meta["notice"]
    assert "photosynthesis" in stream.text
    assert stream.kinds.count("text") > 20
    done = stream.last["done"]
    assert done["finish_reason"] == "stop"
    usage = done["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["output_tokens"] > 0


def test_demo_is_deterministic(demo_service: RunningService) -> None:
    first = read_stream(demo_service.url, params={"query": "tides"})
    second = read_stream(demo_service.url, params={"query": "tides"})
    assert first.text == second.text


def test_unicode_scenario_arrives_exactly(demo_service: RunningService) -> None:
    params = {"query": unicode_recording.QUERY, "scenario": "unicode"}
    stream = read_stream(demo_service.url, params=params)

    assert stream.text == unicode_recording.TEXT
    assert len(stream.events) == unicode_recording.EVENTS
    assert stream.events[0]["meta"]["scenario"] == "unicode"


def test_error_mid_stream_scenario_ends_with_an_error_event(demo_service: RunningService) -> None:
    stream = read_stream(
        demo_service.url, method="POST", json_body={"query": "x", "scenario": "error_mid_stream"}
    )
    assert stream.kinds.count("text") > 5
    assert stream.kinds[-1] == "error"
    assert stream.last["error"]["code"] == "upstream_interrupted"
    assert stream.last["error"]["retryable"] is True


@pytest.mark.parametrize("scenario", ["slow_first_token", "long_silence"])
def test_silences_are_bridged_by_keepalive_comments(
    demo_service: RunningService, scenario: str
) -> None:
    with httpx.stream(
        "GET", f"{demo_service.url}/ai_write", params={"query": "x", "scenario": scenario}
    ) as response:
        body = response.read().decode()

    blocks = body.split("\n\n")
    assert not any(block.strip() == ": keep-alive" for block in blocks), "no comment-only block"
    kinds = [
        kind
        for line in body.splitlines()
        for kind in ["keepalive" if line == ": keep-alive" else "text" if '{"text"' in line else ""]
        if kind
    ]
    first_text = kinds.index("text")
    if scenario == "slow_first_token":
        assert kinds[:first_text].count("keepalive") >= 2
    else:
        last_text = len(kinds) - 1 - kinds[::-1].index("text")
        assert kinds[first_text:last_text].count("keepalive") >= 2
    assert '"done"' in blocks[-2]


# Outside the demo provider, any scenario is refused: test_bad_input.py.
def test_an_unknown_scenario_is_refused_on_the_demo_provider(
    demo_service: RunningService,
) -> None:
    response = httpx.get(f"{demo_service.url}/ai_write", params={"query": "x", "scenario": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_scenario"


def _ask(service: RunningService, question: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qa_service", "ask", "--url", service.url, question],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_cli_ask_streams_to_the_terminal(demo_service: RunningService) -> None:
    answered = _ask(demo_service, "tides")
    assert answered.returncode == 0
    assert "tides" in answered.stdout
    assert "demo" in answered.stderr

    refused = _ask(demo_service, " ")
    assert refused.returncode == 1
    assert "query_required" in refused.stderr
