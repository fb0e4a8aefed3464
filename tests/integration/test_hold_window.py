"""The default hold window: a provider failure before the first text is a real HTTP status.

These services run with QA_FIRST_TEXT_HOLD_SECONDS at its default (5 s) or a
short one; the shared services turn the hold off (tests/support/providers.py).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.metrics import delta, settled_metrics
from tests.support.ports import free_port
from tests.support.providers import marker, provider_settings
from tests.support.service import RunningService, SharedServices, run_service
from tests.support.sse import hang_up_after, read_stream
from tests.support.upstream_stub import Reply, UpstreamStub

HELD = {"QA_FIRST_TEXT_HOLD_SECONDS": "5", "QA_UPSTREAM_READ_TIMEOUT_SECONDS": "1"}
SHORT_HOLD = {"QA_FIRST_TEXT_HOLD_SECONDS": "0.5"}


@pytest.fixture(params=["openai", "groq"])
def held_service(
    request: pytest.FixtureRequest, stub: UpstreamStub, shared_services: SharedServices
) -> RunningService:
    return shared_services.one({**provider_settings(request.param, stub), **HELD})


@pytest.fixture
def short_hold_service(stub: UpstreamStub, shared_services: SharedServices) -> RunningService:
    return shared_services.one({**provider_settings("openai", stub), **SHORT_HOLD})


def _error_body() -> dict[str, object]:
    return {"error": {"message": "nope", "type": "server_error", "code": "x"}}


@pytest.mark.parametrize(
    ("upstream", "headers", "status", "code"),
    [
        (401, {}, 502, "upstream_auth_failed"),
        (403, {}, 502, "upstream_auth_failed"),
        (429, {"retry-after": "7"}, 429, "upstream_rate_limited"),
        (429, {}, 429, "upstream_rate_limited"),
        (500, {}, 503, "upstream_unavailable"),
        (503, {}, 503, "upstream_unavailable"),
        (400, {}, 502, "upstream_bad_request"),
    ],
)
def test_a_provider_failure_before_the_first_text_is_a_real_status(
    held_service: RunningService,
    stub: UpstreamStub,
    upstream: int,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    key = marker()
    stub.reply(key, Reply(status=upstream, headers=headers, error_body=_error_body()))

    response = httpx.get(f"{held_service.url}/ai_write", params={"query": key}, timeout=10)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    if headers:
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"]["retry_after_seconds"] == 7
    elif upstream == 429:
        assert response.headers["retry-after"] == "1"  # a 429 always says when
    else:
        assert "retry-after" not in response.headers


def test_a_held_failure_is_counted_once_as_an_answer_not_also_as_a_refusal(
    held_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(status=500, error_body=_error_body()))
    before = settled_metrics(held_service.url)

    response = httpx.get(f"{held_service.url}/ai_write", params={"query": key}, timeout=10)
    # Settled: the answer is counted as its task ends, a moment after the response.
    after = settled_metrics(held_service.url)

    assert response.status_code == 503
    counted = {
        outcome: delta(before, after, "qa_requests_total", outcome=outcome)
        for outcome in ("error", "refused")
    }
    assert counted == {"error": 1, "refused": 0}


def test_a_provider_that_never_starts_is_a_504(
    held_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    # Past QA_UPSTREAM_READ_TIMEOUT_SECONDS (1 s), within the 5 s hold.
    stub.reply(key, Reply(first_delay=3.0))

    response = httpx.get(f"{held_service.url}/ai_write", params={"query": key}, timeout=10)

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


def test_an_unreachable_provider_is_a_503(tmp_path: Path, stub: UpstreamStub) -> None:
    closed = free_port()  # bound once, then closed: nobody listens there
    settings = {
        **provider_settings("openai", stub),
        **HELD,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{closed}/v1",
    }
    with run_service(settings, tmp_path) as service:
        response = httpx.get(f"{service.url}/ai_write", params={"query": "hi"}, timeout=10)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_unavailable"


def test_a_held_answer_streams_whole_once_its_first_text_arrives(
    held_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["held ", "then ", "whole"], first_delay=0.3))

    stream = read_stream(held_service.url, params={"query": key})

    assert stream.status == 200
    assert stream.shape == ["meta", "text", "done"]
    assert stream.text == "held then whole"


def test_a_failure_after_the_first_text_is_still_an_event(
    held_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["one ", "two ", "three"], cut_after_pieces=1))

    stream = read_stream(held_service.url, params={"query": key})

    assert stream.status == 200
    assert stream.text == "one "
    assert stream.last["error"]["code"] == "upstream_interrupted"


def test_a_first_text_later_than_the_hold_streams_with_keepalives(
    short_hold_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["late ", "text"], first_delay=2.0))

    started = time.monotonic()
    with httpx.stream(
        "GET", f"{short_hold_service.url}/ai_write", params={"query": key}, timeout=10
    ) as response:
        headers_at = time.monotonic() - started
        lines = response.read().decode().splitlines()

    assert response.status_code == 200
    # The headers came when the hold ran out, long before the first text.
    assert headers_at < 1.5
    first_text = next(i for i, line in enumerate(lines) if '{"text"' in line)
    assert lines[:first_text].count(": keep-alive") >= 3
    assert '"meta"' in "".join(lines[:first_text])


@pytest.fixture
def long_hold_short_grace(stub: UpstreamStub, shared_services: SharedServices) -> RunningService:
    settings = {
        **provider_settings("openai", stub),
        "QA_FIRST_TEXT_HOLD_SECONDS": "3",
        "QA_RESUME_GRACE_SECONDS": "1",
    }
    return shared_services.one(settings)


def test_a_hold_longer_than_the_resume_grace_does_not_cancel_the_answer(
    long_hold_short_grace: RunningService, stub: UpstreamStub
) -> None:
    # No reader is attached while the response is held: the grace must wait for it.
    key = marker()
    stub.reply(key, Reply(pieces=["still ", "here"], first_delay=2.5))

    stream = read_stream(long_hold_short_grace.url, params={"query": key})

    assert stream.status == 200
    assert stream.text == "still here"


def test_once_its_reader_attached_a_hang_up_still_cancels_after_the_grace_alone(
    long_hold_short_grace: RunningService, stub: UpstreamStub
) -> None:
    # The hold's allowance ends when the reader attaches: the grace (1 s), not
    # the grace plus the hold (4 s), follows a hang-up.
    key = marker()
    stub.reply(key, Reply(pieces=[f"w{n} " for n in range(200)], piece_delay=0.05))

    hung_up_at, _ = hang_up_after(long_hold_short_grace.url, key)
    closed = stub.wait_closed(key, timeout=5)

    assert closed.client_closed_at is not None  # for the type checker: wait_closed saw it
    assert closed.client_closed_at - hung_up_at < 1 + 1.5


# A question in each dialect's body; a client gone during the hold was sent nothing.
_HELD_ASKS = {
    "/ai_write": lambda key: {"query": key},
    "/v1/chat/completions": lambda key: {
        "model": "chat",
        "messages": [{"role": "user", "content": key}],
        "stream": True,
    },
    "/v1/responses": lambda key: {"model": "chat", "input": key, "stream": True},
}


@pytest.mark.parametrize("path", sorted(_HELD_ASKS))
def test_a_client_that_leaves_during_the_hold_stops_its_answer_in_every_dialect(
    path: str, stub: UpstreamStub, shared_services: SharedServices
) -> None:
    """A silent provider holds the response back, and nothing else listens to
    the connection meanwhile. The client never got the answer's id, so it could
    not resume it in any dialect: no grace is paid for (the default, 5 s)."""
    # The default read timeout: HELD's 1 s would close the upstream by itself.
    held = shared_services.one(
        {**provider_settings("openai", stub), "QA_FIRST_TEXT_HOLD_SECONDS": "5"}
    )
    key = marker()
    stub.reply(key, Reply(pieces=["late "] * 50, first_delay=4.0, piece_delay=0.05))

    left_at = _post_then_leave(
        held, path, _HELD_ASKS[path](key), lambda: stub.wait_for_request(key)
    )

    exchange = stub.wait_closed(key, timeout=10.0)
    assert exchange.client_closed_at is not None
    assert exchange.client_closed_at - left_at < 1.0
    assert exchange.pieces_written == 0


def _post_then_leave(
    service: RunningService, path: str, body: dict[str, Any], before_leaving: Callable[[], object]
) -> float:
    """POST `body` on a raw socket, run `before_leaving`, then close the socket:
    a client gone before any byte of its response (an httpx client would still
    be waiting for the headers). Returns when it left."""
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    port = int(service.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(head.encode() + payload)
        before_leaving()
    return time.monotonic()
