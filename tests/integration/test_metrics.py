"""/metrics moves with every outcome, labelled by provider and model only."""

from __future__ import annotations

import time

import httpx

from tests.support.daemon import wait_until
from tests.support.metrics import delta, read_metrics, settled_metrics, total
from tests.support.providers import marker
from tests.support.service import RunningService
from tests.support.sse import hang_up_after, read_stream
from tests.support.upstream_stub import Reply, UpstreamStub


def test_counters_and_histograms_move_with_answers(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    before = settled_metrics(openai_service.url)

    for _ in range(3):
        key = marker()
        stub.reply(
            key,
            Reply(
                pieces=["a", "b", "c", "d"],
                usage={"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
            ),
        )
        read_stream(openai_service.url, params={"query": key})
    limited = marker()
    stub.reply(limited, Reply(status=429, error_body={"error": {"message": "slow down"}}))
    read_stream(openai_service.url, params={"query": limited})
    slow = marker()
    stub.reply(slow, Reply(pieces=[f"w{n} " for n in range(200)], piece_delay=0.05))
    _, request_id = hang_up_after(openai_service.url, slow)
    openai_service.answer_record(request_id)  # the answer has ended and been counted
    httpx.get(f"{openai_service.url}/ai_write")  # refused: no query

    after = read_metrics(openai_service.url)

    def grew(name: str, **extra: str) -> float:
        return delta(before, after, name, **labels, **extra)

    assert grew("qa_requests_total", outcome="complete") == 3
    assert grew("qa_requests_total", outcome="error", code="upstream_rate_limited") == 1
    assert grew("qa_requests_total", outcome="client_disconnected") == 1
    assert grew("qa_requests_total", outcome="refused", code="query_required") == 1
    assert grew("qa_upstream_errors_total", code="upstream_rate_limited") == 1
    assert grew("qa_client_disconnects_total") == 1
    assert grew("qa_upstream_cancellations_total") == 1
    # Pieces sent: provider chunks that arrived together are one (generation/batching.py).
    assert grew("qa_tokens_relayed_total") >= 4
    assert grew("qa_usage_tokens_total", kind="output") == 12
    assert grew("qa_time_to_first_token_seconds_count") == 4
    assert grew("qa_answer_duration_seconds_count") == 5
    assert total(after, "qa_active_streams", **labels) == 0


def test_active_streams_counts_answers_in_flight(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["x"], first_delay=1.5))
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    with httpx.stream("GET", f"{openai_service.url}/ai_write", params={"query": key}) as response:
        lines = response.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)
        deadline = time.monotonic() + 2
        while total(read_metrics(openai_service.url), "qa_active_streams", **labels) < 1:
            assert time.monotonic() < deadline, "active stream never counted"
            time.sleep(0.02)
        assert any('"done"' in line for line in lines)


def test_series_do_not_grow_per_request(openai_service: RunningService) -> None:
    read_stream(openai_service.url, params={"query": marker()})  # every series exists now
    before = set(read_metrics(openai_service.url))
    for _ in range(5):
        read_stream(openai_service.url, params={"query": marker()})
    # Any label that differs per request (an id, the query) would add series.
    assert set(read_metrics(openai_service.url)) == before


def test_asyncio_tasks_count_an_answer_in_flight_and_fall_back_at_its_end(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    url = openai_service.url
    read_stream(url, params={"query": marker()})  # what a first stream starts once is there
    at_rest = total(settled_metrics(url), "qa_asyncio_tasks")
    assert at_rest >= 1  # the server's own loop, at least
    key = marker()
    stub.reply(key, Reply(pieces=["x"], first_delay=1.5))
    with httpx.stream("GET", f"{url}/ai_write", params={"query": key}) as response:
        lines = response.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)
        # The answer's task and its request's, at least, while the provider is silent.
        wait_until(
            lambda: total(read_metrics(url), "qa_asyncio_tasks") >= at_rest + 2,
            10,
            "the answer's tasks counted",
        )
        assert any('"done"' in line for line in lines)
    wait_until(
        lambda: total(read_metrics(url), "qa_asyncio_tasks") == at_rest,
        10,
        "the tasks back to their number at rest",
    )
