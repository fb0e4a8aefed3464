"""Admission control and per-client limits, in one process (the in-memory counters).

Every request here comes from 127.0.0.1, so the client is that address; each
test runs its own service, so counts never leak between tests.
tests/integration/test_limits_redis.py runs the same limits across replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.support.metrics import read_metrics, total
from tests.support.providers import CANCEL_ON_HANGUP, marker, provider_settings
from tests.support.service import RunningService, open_stream, run_service
from tests.support.sse import read_stream
from tests.support.upstream_stub import Reply, UpstreamStub


@contextmanager
def limited_service(stub: UpstreamStub, workdir: Path, **limits: str) -> Iterator[RunningService]:
    settings = {**provider_settings("openai", stub), **CANCEL_ON_HANGUP, **limits}
    with run_service(settings, workdir) as service:
        yield service


def slots_held(service: RunningService) -> float:
    return total(read_metrics(service.url), "qa_client_slots_held")


def wait_for_no_slot_held(service: RunningService, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while slots_held(service) != 0:
        assert time.monotonic() < deadline, "a client's slot stayed held"
        time.sleep(0.05)


def test_over_the_rate_limit_is_429_with_retry_after_and_openai_headers(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    with limited_service(stub, tmp_path, QA_RATE_LIMIT="3/minute") as service:
        allowed = [read_stream(service.url, params={"query": marker()}) for _ in range(3)]
        refused_query = marker()
        refused = httpx.get(f"{service.url}/ai_write", params={"query": refused_query})

    assert [s.status for s in allowed] == [200, 200, 200]
    assert [s.headers["x-ratelimit-remaining-requests"] for s in allowed] == ["2", "1", "0"]
    assert {s.headers["x-ratelimit-limit-requests"] for s in allowed} == {"3"}
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert stub.exchanges_for(refused_query) == []


def test_over_max_streams_is_a_fast_503_with_no_upstream_call_and_healthz_still_answers(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    slow = [marker(), marker()]
    for key in slow:
        stub.reply(key, Reply(pieces=["a", "b"], stall_after_pieces=1))
    with limited_service(stub, tmp_path, QA_MAX_STREAMS="2") as service, ExitStack() as open_:
        for key in slow:
            open_.enter_context(open_stream(service, key))
            stub.wait_for_request(key)
        refused_query = marker()
        started = time.monotonic()
        refused = httpx.get(f"{service.url}/ai_write", params={"query": refused_query})
        took = time.monotonic() - started
        healthz = httpx.get(f"{service.url}/healthz")
        open_.close()  # both hang up: their places come back
        stub.wait_closed(slow[0])
        stub.wait_closed(slow[1])
        deadline = time.monotonic() + 5
        while (after := read_stream(service.url, params={"query": marker()})).status != 200:
            assert time.monotonic() < deadline, after.body
            time.sleep(0.05)

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "over_capacity"
    assert refused.headers["retry-after"] == "1"
    assert took < 1.0  # refused at once, never queued (the flood benchmark measures it)
    assert stub.exchanges_for(refused_query) == []
    assert healthz.status_code == 200
    assert after.kinds[-1] == "done"


FREE = {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}


def probe_until(
    service: RunningService, stub: UpstreamStub, done: Callable[[httpx.Response], bool]
) -> httpx.Response:
    """Ask with answers that cost no tokens until `done(response)`: an answer's
    tokens are charged a moment after its last event, when its task ends."""
    deadline = time.monotonic() + 5
    while True:
        key = marker()
        stub.reply(key, Reply(usage=FREE))
        response = httpx.get(f"{service.url}/ai_write", params={"query": key}, timeout=10)
        if done(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.02)


def test_the_budget_is_charged_from_usage_and_refuses_once_spent(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    first, second, third = marker(), marker(), marker()
    usage = {"prompt_tokens": 5, "completion_tokens": 60, "total_tokens": 65}
    stub.reply(first, Reply(usage=usage))
    stub.reply(second, Reply(usage=usage))
    with limited_service(stub, tmp_path, QA_CLIENT_TOKEN_BUDGET="100/day") as service:
        one = read_stream(service.url, params={"query": first})
        charged = probe_until(
            service, stub, lambda r: r.headers["x-ratelimit-remaining-tokens"] != "100"
        )
        two = read_stream(service.url, params={"query": second})
        spent = probe_until(service, stub, lambda r: r.status_code != 200)
        refused = httpx.get(f"{service.url}/ai_write", params={"query": third})

    assert one.status == two.status == 200
    assert one.headers["x-ratelimit-remaining-tokens"] == "100"
    assert one.headers["x-ratelimit-limit-tokens"] == "100"
    assert charged.headers["x-ratelimit-remaining-tokens"] == "40"
    assert two.headers["x-ratelimit-remaining-tokens"] == "40"
    # The second answer (60 more, past the 100) was charged in full: spent.
    for response in (spent, refused):
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "budget_exhausted"
        assert response.headers["x-ratelimit-remaining-tokens"] == "0"
        assert 1 <= int(response.headers["retry-after"]) <= 86400
    assert stub.exchanges_for(third) == []


def test_without_usage_the_budget_is_charged_the_answer_characters(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    first = marker()
    stub.reply(first, Reply(pieces=["twelve chars", " and ten more"], usage=None))
    with limited_service(stub, tmp_path, QA_CLIENT_TOKEN_BUDGET="1000/hour") as service:
        answered = read_stream(service.url, params={"query": first})
        charged = probe_until(
            service, stub, lambda r: r.headers["x-ratelimit-remaining-tokens"] != "1000"
        )

    assert answered.text == "twelve chars and ten more"
    assert charged.headers["x-ratelimit-remaining-tokens"] == str(1000 - 25)


def test_too_many_streams_is_429_and_every_way_an_answer_ends_gives_its_slot_back(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    stalled, cut, idle, cancelled = marker(), marker(), marker(), marker()
    stub.reply(stalled, Reply(pieces=["a", "b"], stall_after_pieces=1))
    stub.reply(cut, Reply(pieces=["a", "b", "c"], cut_after_pieces=1))
    stub.reply(idle, Reply(pieces=["a", "b"], stall_after_pieces=1))
    stub.reply(cancelled, Reply(pieces=["a", "b"], stall_after_pieces=1))
    limits = {"QA_CLIENT_MAX_STREAMS": "1", "QA_UPSTREAM_IDLE_TIMEOUT_SECONDS": "1"}
    with limited_service(stub, tmp_path, **limits) as service:
        # In progress: a second one is refused.
        with open_stream(service, stalled):
            stub.wait_for_request(stalled)
            second = httpx.get(f"{service.url}/ai_write", params={"query": marker()})
        # Hang-up.
        stub.wait_closed(stalled)
        wait_for_no_slot_held(service)
        # Done.
        assert read_stream(service.url, params={"query": marker()}).kinds[-1] == "done"
        wait_for_no_slot_held(service)
        # Error: the provider cut the stream.
        assert read_stream(service.url, params={"query": cut}).kinds[-1] == "error"
        wait_for_no_slot_held(service)
        # Timeout: one piece, then silence past QA_UPSTREAM_IDLE_TIMEOUT_SECONDS.
        timed_out = read_stream(service.url, params={"query": idle})
        assert timed_out.last["error"]["code"] == "upstream_timeout"
        wait_for_no_slot_held(service)
        # Cancel.
        with open_stream(service, cancelled) as response:
            # Held in a name: an abandoned iterator would close the response.
            lines = response.iter_lines()
            # The first event's id is <answer id>:0.
            event_id = next(line for line in lines if line.startswith("id: "))
            answer_id = event_id.removeprefix("id: ").split(":")[0]
            stub.wait_for_request(cancelled)
            httpx.post(f"{service.url}/answers/{answer_id}/cancel").raise_for_status()
            wait_for_no_slot_held(service)
        last = read_stream(service.url, params={"query": marker()})

    assert second.status_code == 429
    assert second.json()["error"]["code"] == "too_many_streams"
    assert second.headers["retry-after"] == "1"
    assert last.kinds[-1] == "done"


def test_with_keys_on_each_key_is_its_own_client(stub: UpstreamStub, tmp_path: Path) -> None:
    keys = [f"qa-test-key-{i}-{marker()}" for i in range(2)]
    limits = {"QA_RATE_LIMIT": "2/minute", "QA_API_KEYS": ",".join(keys)}

    def ask(key: str) -> int:
        response = httpx.get(
            f"{service.url}/ai_write",
            params={"query": marker()},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        return response.status_code

    with limited_service(stub, tmp_path, **limits) as service:
        first_key = [ask(keys[0]) for _ in range(3)]
        second_key = [ask(keys[1]) for _ in range(2)]

    # Same address, different keys: the limit follows the key.
    assert first_key == [200, 200, 429]
    assert second_key == [200, 200]


def test_an_ipv6_site_is_one_client_across_its_64s(stub: UpstreamStub, tmp_path: Path) -> None:
    """A /56 (one site's usual delegation) holds 256 /64s: counted per /64, one
    subscriber started an answer from each. Through a trusted proxy (loopback,
    QA_FORWARDED_ALLOW_IPS' default), 32 requests from 32 /64s of one /56."""
    with limited_service(stub, tmp_path, QA_RATE_LIMIT="2/minute") as service:
        statuses = [
            httpx.get(
                f"{service.url}/ai_write",
                params={"query": marker()},
                headers={"X-Forwarded-For": f"2001:db8:7:{block:x}::1"},
                timeout=10,
            ).status_code
            for block in range(0x4500, 0x4520)
        ]
        # Another /56 is another client.
        elsewhere = httpx.get(
            f"{service.url}/ai_write",
            params={"query": marker()},
            headers={"X-Forwarded-For": "2001:db8:7:4600::1"},
            timeout=10,
        )
    assert statuses.count(200) == 2, statuses
    assert statuses.count(429) == 30
    assert elsewhere.status_code == 200
