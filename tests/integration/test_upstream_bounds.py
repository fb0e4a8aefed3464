"""The service enforces its own bounds on the provider: timeouts, retry waits, the output cap.

Each holds for both providers, and each ends the upstream request: the stub
sees its socket closed.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.providers import GROQ_KEY, OPENAI_KEY, marker, provider_settings
from tests.support.service import RunningService, SharedServices, run_service
from tests.support.sse import read_stream
from tests.support.upstream_stub import Reply, UpstreamStub

READ_TIMEOUT = 2.0
IDLE_TIMEOUT = 4.0  # apart from READ_TIMEOUT, so a test can tell which fired
MAX_TOKENS = 50
MAX_RETRY_WAIT = 3.0


@pytest.fixture(params=["openai", "groq"])
def bounded(
    request: pytest.FixtureRequest, stub: UpstreamStub, shared_services: SharedServices
) -> RunningService:
    settings = {
        **provider_settings(request.param, stub),
        "QA_UPSTREAM_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        "QA_UPSTREAM_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
        "QA_MAX_TOKENS": str(MAX_TOKENS),
        "QA_UPSTREAM_MAX_RETRIES": "2",
        "QA_UPSTREAM_MAX_RETRY_WAIT_SECONDS": str(MAX_RETRY_WAIT),
    }
    return shared_services.one(settings)


@pytest.mark.parametrize("stall_after", [0, 1])
def test_a_silent_upstream_ends_with_upstream_timeout_at_the_read_timeout(
    bounded: RunningService, stub: UpstreamStub, stall_after: int
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["one ", "two "], stall_after_pieces=stall_after))

    stream = read_stream(bounded.url, params={"query": key})

    assert stream.text == "one "[: 4 * stall_after]
    assert stream.last["error"] == {
        "code": "upstream_timeout",
        "message": "The model provider did not answer in time.",
        "retryable": True,
    }
    exchange = stub.wait_closed(key, timeout=1.0)
    assert exchange.client_closed_at is not None
    # From the last byte the provider sent. For stall_after=0 that is the request,
    # timed where the stub stands, from its arrival to the service closing it: the
    # client's own send is no start, on a busy machine getting there can take a second.
    silent = (
        stream.arrived[-1] - stream.arrived[-2]
        if stall_after
        else exchange.client_closed_at - exchange.opened_at
    )
    assert READ_TIMEOUT - 0.2 < silent < READ_TIMEOUT + 1.0
    assert not exchange.completed
    assert len(stub.exchanges_for(key)) == 1  # a timed-out stream is not retried


def test_an_upstream_that_only_sends_comments_ends_at_the_idle_timeout(
    bounded: RunningService, stub: UpstreamStub
) -> None:
    """SSE comments keep the read timeout from firing; the idle bound still does."""
    key = marker()
    stub.reply(
        key,
        Reply(pieces=["one ", "two "], stall_after_pieces=1, stall_comment_every=0.25),
    )

    stream = read_stream(bounded.url, params={"query": key})

    assert stream.text == "one "
    assert stream.last["error"]["code"] == "upstream_timeout"
    gap = stream.arrived[-1] - stream.arrived[-2]
    assert IDLE_TIMEOUT - 0.2 < gap < IDLE_TIMEOUT + 1.0
    assert not stub.wait_closed(key, timeout=1.0).completed


def test_comments_before_the_first_text_count_against_the_read_timeout(
    bounded: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["one "], stall_after_pieces=0, stall_comment_every=0.25))

    stream = read_stream(bounded.url, params={"query": key})

    assert stream.kinds == ["meta", "error"]
    assert stream.last["error"]["code"] == "upstream_timeout"
    # Timed where the provider stands, from the request's arrival to its close
    # (the idle bound, IDLE_TIMEOUT, would close it two seconds later).
    exchange = stub.wait_closed(key, timeout=1.0)
    assert exchange.client_closed_at is not None
    assert READ_TIMEOUT - 0.2 < exchange.client_closed_at - exchange.opened_at < READ_TIMEOUT + 1.0
    assert not exchange.completed


def test_the_output_cap_is_enforced_when_the_provider_ignores_it(
    bounded: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [f"t{n} " for n in range(3000)]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.001))

    stream = read_stream(bounded.url, params={"query": key})

    assert stream.text == "".join(pieces[:MAX_TOKENS])
    done = stream.last["done"]
    assert done["finish_reason"] == "length"
    assert done["usage"] is None  # the provider never got to report it
    exchange = stub.wait_closed(key, timeout=1.0)
    assert not exchange.completed
    assert exchange.pieces_written < 3000
    # The cap was asked of the provider too (openai names it max_completion_tokens).
    body = stub.exchanges_for(key)[0].body
    assert body.get("max_tokens", body.get("max_completion_tokens")) == MAX_TOKENS


def test_the_output_cap_counts_the_providers_chunks_when_they_arrive_together(
    bounded: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [f"t{n} " for n in range(300)]
    # All at once: coalescing merges them, and the cap must still cut at a piece.
    stub.reply(key, Reply(pieces=pieces, burst=True))

    stream = read_stream(bounded.url, params={"query": key})

    assert stream.text == "".join(pieces[:MAX_TOKENS])
    assert stream.last["done"]["finish_reason"] == "length"


def test_an_answer_exactly_at_the_cap_is_not_cut(
    bounded: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [f"t{n} " for n in range(MAX_TOKENS)]
    stub.reply(key, Reply(pieces=pieces, finish_reason="stop"))

    stream = read_stream(bounded.url, params={"query": key})

    # A provider that keeps to the cap is never cut: its own finish reason
    # and usage arrive, and its request ends on its own.
    assert stream.text == "".join(pieces)
    assert stream.last["done"]["finish_reason"] == "stop"
    assert stream.last["done"]["usage"] == {
        "input_tokens": 21,
        "output_tokens": 4,
        "total_tokens": 25,
    }
    assert stub.exchanges_for(key)[0].completed


def test_a_retry_after_beyond_the_longest_wait_is_passed_on_without_retrying(
    bounded: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(status=429, headers={"retry-after": "300"}))

    started = time.monotonic()
    stream = read_stream(bounded.url, params={"query": key})

    error = stream.last["error"]
    assert error["code"] == "upstream_rate_limited"
    assert error["retry_after_seconds"] == 300
    assert len(stub.exchanges_for(key)) == 1
    # Operators see why there was no retry, though the SDKs' own lines are held back.
    record = bounded.answer_record(stream.headers["x-request-id"])
    (warning,) = [
        r
        for r in bounded.log_records()
        if r.get("request_id") == record["request_id"]
        and r["name"] == "qa_service.generation.upstream"
    ]
    assert warning["level"] == "WARNING"
    assert (warning["upstream_status"], warning["retry_after_seconds"]) == (429, 300)
    assert time.monotonic() - started < 1.5


def test_a_short_retry_after_is_waited_out_between_retries(
    bounded: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(status=429, headers={"retry-after": "0.4"}))

    started = time.monotonic()
    stream = read_stream(bounded.url, params={"query": key})

    assert stream.last["error"]["code"] == "upstream_rate_limited"
    exchanges = stub.exchanges_for(key)
    assert len(exchanges) == 3  # the first try and QA_UPSTREAM_MAX_RETRIES=2
    gaps = [later.opened_at - earlier.opened_at for earlier, later in itertools.pairwise(exchanges)]
    assert all(0.35 < gap < 1.5 for gap in gaps), gaps
    assert time.monotonic() - started < READ_TIMEOUT


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A port whose connects hang: its listen backlog is full and nothing accepts."""
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        filler.connect(("127.0.0.1", port))  # takes the only place in the backlog
        yield port


@pytest.mark.parametrize("provider", ["openai", "groq"])
def test_a_connect_that_hangs_ends_with_upstream_timeout_at_the_connect_timeout(
    provider: str, unaccepting_port: int, workdir: Path
) -> None:
    base = f"http://127.0.0.1:{unaccepting_port}"
    settings = {
        "QA_PROVIDER": provider,
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": f"{base}/v1",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": base,
        "QA_UPSTREAM_MAX_RETRIES": "0",
        "QA_UPSTREAM_CONNECT_TIMEOUT_SECONDS": "1",
        "QA_UPSTREAM_READ_TIMEOUT_SECONDS": "10",
    }
    with run_service(settings, workdir) as service:
        started = time.monotonic()
        refused = httpx.get(f"{service.url}/ai_write", params={"query": "anything"}, timeout=10)
        took = time.monotonic() - started

    # Within the default hold window (5 s): a real status, not an event.
    assert refused.status_code == 504
    assert refused.json()["error"]["code"] == "upstream_timeout"
    assert refused.json()["error"]["retryable"] is True
    assert 0.8 < took < 2.0
