"""Provider failures become explicit error events; nothing secret reaches the client or logs."""

from __future__ import annotations

import pytest

from tests.support.providers import GROQ_KEY, OPENAI_KEY, marker
from tests.support.service import RunningService
from tests.support.sse import read_stream
from tests.support.upstream_stub import Reply, UpstreamStub


def _error_body(message: str) -> dict[str, object]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": "x"}}


@pytest.mark.parametrize(
    ("status", "headers", "code", "retryable"),
    [
        (401, {}, "upstream_auth_failed", False),
        (403, {}, "upstream_auth_failed", False),
        (429, {"retry-after": "7"}, "upstream_rate_limited", True),
        (500, {}, "upstream_unavailable", True),
        (503, {}, "upstream_unavailable", True),
        (400, {}, "upstream_bad_request", False),
        (404, {}, "upstream_bad_request", False),
    ],
)
def test_upstream_status_before_first_token_is_an_error_event(
    service: RunningService,
    stub: UpstreamStub,
    status: int,
    headers: dict[str, str],
    code: str,
    retryable: bool,
) -> None:
    key = marker()
    stub.reply(key, Reply(status=status, headers=headers, error_body=_error_body("nope")))

    stream = read_stream(service.url, params={"query": key})

    assert stream.status == 200
    assert stream.kinds == ["meta", "error"]
    error = stream.last["error"]
    assert error["code"] == code
    assert error["retryable"] is retryable
    assert error["message"]
    if status == 429:
        assert error["retry_after_seconds"] == 7


def test_connection_cut_mid_stream_is_an_error_after_the_text(
    service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["one ", "two ", "three ", "four"], cut_after_pieces=2))

    stream = read_stream(service.url, params={"query": key})

    assert stream.text == "one two "
    assert stream.shape == ["meta", "text", "error"]
    assert stream.last["error"] == {
        "code": "upstream_interrupted",
        "message": "The model provider's stream was cut off.",
        "retryable": True,
    }


def test_stream_that_ends_without_a_finish_reason_is_incomplete(
    service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["partial"], finish_reason=None, send_done=False))

    stream = read_stream(service.url, params={"query": key})

    assert stream.text == "partial"
    assert stream.last["error"]["code"] == "upstream_incomplete"


def test_upstream_unreachable_is_an_error_event_once_the_stream_has_started(
    workdir, stub: UpstreamStub
) -> None:  # type: ignore[no-untyped-def]
    from tests.support.ports import free_port
    from tests.support.service import run_service

    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = {
        "QA_PROVIDER": "openai",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": dead,
        "QA_UPSTREAM_MAX_RETRIES": "0",
        # No hold: the stream starts at once (test_hold_window.py: the 503 with it).
        "QA_FIRST_TEXT_HOLD_SECONDS": "0",
    }
    with run_service(settings, workdir) as service:
        stream = read_stream(service.url, params={"query": "anything"})
    assert stream.kinds == ["meta", "error"]
    assert stream.last["error"]["code"] == "upstream_unavailable"
    assert stream.last["error"]["retryable"] is True


@pytest.mark.parametrize(
    ("status", "code"), [(401, "upstream_auth_failed"), (500, "upstream_unavailable")]
)
def test_an_error_body_echoing_the_key_reaches_neither_client_nor_logs(
    service: RunningService, stub: UpstreamStub, status: int, code: str
) -> None:
    key = marker()
    echo = _error_body("Incorrect API key provided: {api_key}. Request: {api_key}")
    stub.reply(key, Reply(status=status, error_body=echo))

    with_raw = read_stream(service.url, params={"query": key})

    assert with_raw.last["error"]["code"] == code
    raw_events = repr(with_raw.events)
    logs = service.logs()
    for secret in (OPENAI_KEY, GROQ_KEY):
        assert secret not in raw_events
        assert secret not in logs
        assert secret[-12:] not in logs
    assert "Incorrect API key" not in raw_events
    assert "Incorrect API key" not in logs
    assert "Traceback" not in logs
    # The failure is still logged, by code and status, for operators.
    record = service.answer_record(with_raw.headers["x-request-id"])
    assert record["level"] == "WARNING"
    assert record["error_code"] == code
    assert record["upstream_status"] == status
