"""At every log level, no line holds the question, the answer, a key or a part of one."""

from __future__ import annotations

import pytest

from tests.support.providers import (
    CANCEL_ON_HANGUP,
    GROQ_KEY,
    OPENAI_KEY,
    marker,
    provider_settings,
)
from tests.support.service import RunningService, SharedServices
from tests.support.sse import hang_up_after, read_stream
from tests.support.upstream_stub import Reply, UpstreamStub


@pytest.fixture(params=["openai", "groq"])
def debug_service(
    request: pytest.FixtureRequest, stub: UpstreamStub, shared_services: SharedServices
) -> RunningService:
    settings = {
        **provider_settings(request.param, stub),
        **CANCEL_ON_HANGUP,
        "QA_LOG_LEVEL": "debug",
    }
    return shared_services.one(settings)


def test_a_debug_run_logs_no_question_answer_or_key(
    debug_service: RunningService, stub: UpstreamStub
) -> None:
    question = f"why is the sky {marker()}"
    pieces = [f"answer-{marker()} " for _ in range(5)]
    stub.reply(question, Reply(pieces=pieces))
    refused = f"refused {marker()}"
    stub.reply(
        refused,
        Reply(
            status=401,
            headers={"x-rejected-key": "{api_key_masked}"},
            error_body={"error": {"message": "Incorrect API key provided: {api_key_masked}"}},
        ),
    )
    left = f"left {marker()}"
    stub.reply(left, Reply(pieces=pieces * 40, piece_delay=0.01))

    assert read_stream(debug_service.url, params={"query": question}).text == "".join(pieces)
    assert read_stream(debug_service.url, params={"query": refused}).kinds == ["meta", "error"]
    hang_up_after(debug_service.url, left, "text")
    stub.wait_closed(left)

    records = debug_service.log_records()
    # The run really was at DEBUG, so a quiet log proves nothing by accident.
    assert any(r["level"] == "DEBUG" and r["name"].startswith("qa_service") for r in records)
    logs = debug_service.logs()
    forbidden = [question, refused, left, *pieces, "Incorrect API key"]
    for key in (OPENAI_KEY, GROQ_KEY):
        forbidden += [key, key[:8], key[-8:]]
    assert [word for word in forbidden if word in logs] == []
