"""QA_FALLBACK_PROVIDER: the fallback answers when the primary fails before any text, never after.

The primary is openai and the fallback groq, both on the one stub: a reply
registered for a path plays one of them (upstream_stub.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.metrics import delta, read_metrics
from tests.support.ports import free_port
from tests.support.providers import CANCEL_ON_HANGUP, GROQ_KEY, marker, provider_settings
from tests.support.service import RunningService, SharedServices, run_service
from tests.support.sse import hang_up_after, read_stream
from tests.support.upstream_stub import GROQ_PATH, OPENAI_PATH, Reply, UpstreamStub

FALLBACK_MODEL = "llama-3.1-8b-instant"  # groq's default: QA_FALLBACK_MODEL unset
FALLBACK_PIECES = ["The fallback", " answers ", "in full."]


def _with_groq_fallback(stub: UpstreamStub) -> dict[str, str]:
    return {
        "QA_FALLBACK_PROVIDER": "groq",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": stub.url,
        **CANCEL_ON_HANGUP,
    }


@pytest.fixture
def with_fallback(stub: UpstreamStub, shared_services: SharedServices) -> RunningService:
    return shared_services.one({**provider_settings("openai", stub), **_with_groq_fallback(stub)})


def _fallback_answers(stub: UpstreamStub, key: str, primary: Reply) -> None:
    stub.reply(key, primary, path=OPENAI_PATH)
    stub.reply(key, Reply(pieces=FALLBACK_PIECES), path=GROQ_PATH)


def _assert_answered_by_the_fallback(service: RunningService, key: str) -> str:
    """Asks with `key` and checks the fallback's answer; gives the request id."""
    stream = read_stream(service.url, params={"query": key})

    assert stream.text == "".join(FALLBACK_PIECES)
    assert stream.shape == ["meta", "text", "done"]
    assert (stream.events[0]["meta"]["provider"], stream.events[0]["meta"]["model"]) == (
        "openai",
        "gpt-4o-mini",
    )
    done = stream.last["done"]
    assert (done["provider"], done["model"]) == ("groq", FALLBACK_MODEL)
    assert done["finish_reason"] == "stop"
    record = service.answer_record(stream.headers["x-request-id"])
    assert (record["provider"], record["answered_provider"], record["answered_model"]) == (
        "openai",
        "groq",
        FALLBACK_MODEL,
    )
    assert record["fallback"] is True
    assert record["outcome"] == "complete"
    return str(record["request_id"])


def test_a_primary_500_is_answered_by_the_fallback(
    with_fallback: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    _fallback_answers(stub, key, Reply(status=500))
    before = read_metrics(with_fallback.url)

    request_id = _assert_answered_by_the_fallback(with_fallback, key)

    assert len(stub.exchanges_for(key, OPENAI_PATH)) == 1
    assert len(stub.exchanges_for(key, GROQ_PATH)) == 1
    fallbacks = delta(before, read_metrics(with_fallback.url), "qa_fallbacks_total")
    assert fallbacks == 1
    # Operators see why: the primary's status, never its error body.
    (line,) = [
        r
        for r in with_fallback.log_records()
        if r.get("message") == "the primary model failed before any text; asking the fallback"
        and r.get("request_id") == request_id
    ]
    assert (line["failed_provider"], line["upstream_status"]) == ("openai", 500)
    assert (line["fallback_provider"], line["fallback_model"]) == ("groq", FALLBACK_MODEL)


def test_a_primary_stream_cut_before_any_text_is_answered_by_the_fallback(
    with_fallback: RunningService, stub: UpstreamStub
) -> None:
    """The role delta came, then the cut: no text yet, so the fallback answers."""
    key = marker()
    _fallback_answers(stub, key, Reply(pieces=["never sent"], cut_after_pieces=0))

    _assert_answered_by_the_fallback(with_fallback, key)

    assert stub.exchanges_for(key, OPENAI_PATH)[0].pieces_written == 0


def test_an_unreachable_primary_is_answered_by_the_fallback(
    stub: UpstreamStub, workdir: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
    settings = {
        **provider_settings("openai", stub),
        "OPENAI_BASE_URL": closed,
        **_with_groq_fallback(stub),
        # Ready while the fallback answers: run_service waits for /readyz.
        "QA_READYZ_PROBE": "true",
    }
    key = marker()
    stub.reply(key, Reply(pieces=FALLBACK_PIECES), path=GROQ_PATH)

    with run_service(settings, workdir) as service:
        _assert_answered_by_the_fallback(service, key)


def test_a_primary_cut_mid_answer_does_not_fall_back(
    with_fallback: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    _fallback_answers(stub, key, Reply(pieces=["one ", "two ", "three"], cut_after_pieces=2))

    stream = read_stream(with_fallback.url, params={"query": key})

    assert stream.text == "one two "
    assert stream.last["error"]["code"] == "upstream_interrupted"
    record = with_fallback.answer_record(stream.headers["x-request-id"])
    assert (record["answered_provider"], record["fallback"]) == ("openai", False)
    assert stub.exchanges_for(key, GROQ_PATH) == []


def test_a_request_the_primary_refuses_as_bad_does_not_fall_back(
    with_fallback: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    _fallback_answers(stub, key, Reply(status=400))

    stream = read_stream(with_fallback.url, params={"query": key})

    assert stream.last["error"]["code"] == "upstream_bad_request"
    with_fallback.answer_record(stream.headers["x-request-id"])
    assert stub.exchanges_for(key, GROQ_PATH) == []


def test_a_hangup_while_the_fallback_streams_closes_the_fallbacks_request(
    with_fallback: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(status=503), path=OPENAI_PATH)
    pieces = [f"w{n} " for n in range(400)]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.02), path=GROQ_PATH)

    hung_up_at, _ = hang_up_after(with_fallback.url, key, "text")

    exchange = stub.wait_closed(key, timeout=2.0, path=GROQ_PATH)
    assert exchange.client_closed_at is not None
    assert exchange.client_closed_at - hung_up_at < 1.0
    assert not exchange.completed
