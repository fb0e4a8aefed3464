"""Answers outlive connections: resume with Last-Event-ID on any replica, cancel from
any replica, grace after a hang-up, a lost producer, a Redis restart.

Each test runs on both stores: `redis` is two service processes sharing a real
redis-server (the reconnect lands on the other replica), `memory` is one
process (the same promises, without Redis).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import RefusedStart
from tests.support.metrics import read_metrics, total
from tests.support.ports import free_port
from tests.support.providers import marker, provider_settings
from tests.support.redis_server import RedisServer, run_redis
from tests.support.resume import AnswerIdWatch, EventWatch, Read, read, seqs
from tests.support.service import RunningService, run_services
from tests.support.upstream_stub import Reply, UpstreamStub

GRACE = 1.5
PIECES = [f"w{n} " for n in range(60)]  # 1.2 s at 20 ms a piece
# How long Redis stays away in the empty-restart test: past PROTOCOL.md's
# promise of riding out at least 10 s (and every retry of redis-py's own).
OUTAGE_SECONDS = 11.0
LONG = [f"long{n} " for n in range(2000)]  # 40 s at 20 ms a piece


@dataclass
class Replicas:
    a: RunningService
    b: RunningService
    redis: RedisServer | None


def _settings(stub: UpstreamStub, redis: RedisServer | None, **extra: str) -> dict[str, str]:
    settings = {
        **provider_settings("openai", stub),
        "QA_RESUME_GRACE_SECONDS": str(GRACE),
        **extra,
    }
    if redis is not None:
        settings["QA_REDIS_URL"] = redis.url
    return settings


@contextmanager
def _replicas(backend: str, stub: UpstreamStub, workdir: Path, **extra: str) -> Iterator[Replicas]:
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(workdir)) if backend == "redis" else None
        settings = _settings(stub, redis, **extra)
        count = 1 if redis is None else 2
        a, *others = stack.enter_context(run_services([settings] * count, workdir))
        yield Replicas(a, others[0] if others else a, redis)


@pytest.fixture(
    scope="module", params=[pytest.param("redis", marks=pytest.mark.replicas), "memory"]
)
def replicas(
    request: pytest.FixtureRequest, stub: UpstreamStub, workdir: Path
) -> Iterator[Replicas]:
    with _replicas(request.param, stub, workdir) as pair:
        yield pair


def _assert_one_answer(first: Read, rest: Read, pieces: list[str]) -> None:
    """Joined, the two reads are the answer exactly: every seq once, in order."""
    # How the resumed read ended says why text is missing, if it is.
    assert "done" in rest.last, rest.last
    assert first.text + rest.text == "".join(pieces)
    ids = first.ids + rest.ids
    assert len(set(ids)) == len(ids)
    assert seqs(ids) == list(range(len(ids)))
    assert {i.rsplit(":", 1)[0] for i in ids} == {first.answer_id}


def test_a_stream_cut_mid_answer_resumes_on_the_other_replica_exactly(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, piece_delay=0.02))
    before = read_metrics(replicas.b.url)

    first = read(replicas.a.url, params={"query": key}, texts=5)
    rest = read(replicas.b.url, params={"query": key}, last_event_id=first.last_id)

    assert first.status == rest.status == 200
    assert first.events[0]["meta"]["answer_id"] == first.answer_id
    assert "meta" not in rest.events[0]  # nothing before the cut comes again
    _assert_one_answer(first, rest, PIECES)
    assert len(stub.exchanges_for(key)) == 1
    after = read_metrics(replicas.b.url)
    assert total(after, "qa_resumes_total") - total(before, "qa_resumes_total") == 1


def test_a_resume_after_the_end_replays_the_rest_then_gets_204(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, piece_delay=0.01))

    first = read(replicas.a.url, params={"query": key}, texts=5)
    # Read to the end at once, by id: an attached reader, not the clock, keeps
    # the answer going (on a busy machine the grace alone could run out first).
    watched = read(
        replicas.a.url, f"/answers/{first.answer_id}/events", last_event_id=first.last_id
    )
    assert "done" in watched.last, watched.last
    rest = read(replicas.b.url, params={"query": key}, last_event_id=first.last_id)
    again = read(replicas.b.url, params={"query": key}, last_event_id=rest.last_id)
    by_id = read(replicas.a.url, f"/answers/{first.answer_id}/events", last_event_id=rest.last_id)

    _assert_one_answer(first, rest, PIECES)
    assert rest.ids == watched.ids
    assert again.status == 204
    assert by_id.status == 204
    assert len(stub.exchanges_for(key)) == 1


def test_a_reader_on_the_producing_replica_is_served_from_its_memory_not_redis(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    if replicas.redis is None:
        pytest.skip("only the Redis store reads from Redis")
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, piece_delay=0.01))
    before = replicas.redis.command_stats()

    whole = read(replicas.a.url, params={"query": key})
    on_b = read(replicas.b.url, f"/answers/{whole.answer_id}/events")

    traffic = replicas.redis.command_stats() - before
    assert whole.text == on_b.text == "".join(PIECES)
    assert on_b.ids == whole.ids
    # Every event was written, in batches of what came within QA_REDIS_BATCH_MS
    # (a piece every 10 ms: about five a batch); the reader on A needed no XREAD
    # for them, the later reader on B (answer ended, held nowhere) a few.
    assert 1 <= traffic.calls.get("evalsha", 0) < len(whole.ids) / 2, traffic.calls
    assert traffic.calls.get("xread", 0) <= 3


def test_fetch_clients_read_any_answer_by_id_from_any_seq(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES[:10]))
    whole = read(replicas.a.url, params={"query": key})

    from_start = read(replicas.b.url, f"/answers/{whole.answer_id}/events")
    after_three = read(replicas.b.url, f"/answers/{whole.answer_id}/events", params={"after": "3"})

    assert from_start.events == whole.events
    assert from_start.ids == whole.ids
    assert after_three.ids == whole.ids[4:]


def test_resumes_that_cannot_be_honoured_are_refused_without_an_upstream_call(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES[:5]))
    whole = read(replicas.a.url, params={"query": key})
    other = marker()
    before = read_metrics(replicas.b.url)

    unknown = read(replicas.b.url, params={"query": key}, last_event_id="A" * 22 + ":3")
    mismatch = read(replicas.b.url, params={"query": other}, last_event_id=whole.ids[2])
    malformed = read(replicas.b.url, params={"query": key}, last_event_id="not-an-id")
    no_such_events = read(replicas.b.url, "/answers/" + "B" * 22 + "/events")
    no_such_cancel = httpx.post(f"{replicas.b.url}/answers/{'C' * 22}/cancel", timeout=5)

    assert (unknown.status, unknown.error()["code"]) == (404, "answer_not_found")
    assert (mismatch.status, mismatch.error()["code"]) == (409, "resume_mismatch")
    assert (malformed.status, malformed.error()["code"]) == (400, "invalid_last_event_id")
    assert (no_such_events.status, no_such_events.error()["code"]) == (404, "answer_not_found")
    assert no_such_cancel.status_code == 404
    assert no_such_cancel.json()["error"]["code"] == "answer_not_found"
    assert stub.exchanges_for(other) == []
    assert len(stub.exchanges_for(key)) == 1
    after = read_metrics(replicas.b.url)
    for code, count in (
        ("answer_not_found", 2),
        ("resume_mismatch", 1),
        ("invalid_last_event_id", 1),
    ):
        name = "qa_resumes_refused_total"
        refused = total(after, name, code=code) - total(before, name, code=code)
        assert refused == count, code


def test_cancel_through_one_replica_stops_generation_on_the_other(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=LONG, piece_delay=0.02))
    watch = AnswerIdWatch()
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read, replicas.a.url, params={"query": key}, on_event=watch)
        exchange = stub.wait_for_request(key)
        answer_id = watch.wait()

        cancelled_at = time.monotonic()
        response = httpx.post(f"{replicas.b.url}/answers/{answer_id}/cancel", timeout=5)
        closed = stub.wait_closed(key)
        whole = reading.result(timeout=10)

    assert response.status_code == 200
    assert response.json() == {"answer_id": answer_id, "status": "cancelled"}
    assert closed.client_closed_at is not None
    assert closed.client_closed_at - cancelled_at < 1.0
    assert not exchange.completed
    assert whole.last == {
        "error": {"code": "cancelled", "message": "The answer was cancelled.", "retryable": False}
    }
    again = httpx.post(f"{replicas.b.url}/answers/{answer_id}/cancel", timeout=5)
    assert again.json()["status"] == "finished"


def test_a_hangup_with_no_resume_cancels_after_the_grace(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=LONG, piece_delay=0.02))

    read(replicas.a.url, params={"query": key}, texts=3)
    hung_up_at = time.monotonic()
    closed = stub.wait_closed(key, timeout=GRACE + 5)

    assert closed.client_closed_at is not None
    assert GRACE - 0.3 < closed.client_closed_at - hung_up_at < GRACE + 1.5
    assert not closed.completed


def test_a_hangup_then_a_resume_inside_the_grace_continues(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [f"p{n} " for n in range(150)]  # 3 s: longer than the grace
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.02))

    first = read(replicas.a.url, params={"query": key}, texts=3)
    time.sleep(GRACE / 2)
    rest = read(replicas.b.url, params={"query": key}, last_event_id=first.last_id)

    _assert_one_answer(first, rest, pieces)
    assert stub.wait_ended(key).completed
    assert len(stub.exchanges_for(key)) == 1


@pytest.fixture
def fragile_replicas(stub: UpstreamStub, workdir: Path) -> Iterator[Replicas]:
    """Replicas of their own, for tests that kill one or restart Redis."""
    with _replicas("redis", stub, workdir, QA_PRODUCER_LEASE_SECONDS="1") as pair:
        yield pair


@pytest.mark.replicas
def test_a_killed_producer_leaves_readers_elsewhere_a_producer_lost_error(
    fragile_replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=LONG, piece_delay=0.02))
    first = read(fragile_replicas.a.url, params={"query": key}, texts=3)
    with ThreadPoolExecutor(1) as pool:
        path = f"/answers/{first.answer_id}/events"
        following = EventWatch()
        reading = pool.submit(
            read, fragile_replicas.b.url, path, last_event_id=first.last_id, on_event=following
        )
        following.wait()  # the reader on B is following live

        os.kill(fragile_replicas.a.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        rest = reading.result(timeout=10)

    assert rest.last["error"]["code"] == "producer_lost"
    assert rest.last["error"]["retryable"] is True
    # The bound PROTOCOL.md gives: 1.5 leases (1 s here) plus a second.
    assert rest.arrived[-1] - killed_at < 1.5 + 1.5
    assert seqs(first.ids + rest.ids) == list(range(len(first.ids) + len(rest.ids)))
    assert total(read_metrics(fragile_replicas.b.url), "qa_producers_lost_total") == 1


@pytest.mark.replicas
def test_a_redis_restart_mid_answer_loses_nothing_for_readers_here_and_elsewhere(
    fragile_replicas: Replicas, stub: UpstreamStub
) -> None:
    """Redis goes away, and comes back empty, while A writes the answer: A holds it whole and
    writes it all again; the reader on A never notices, the one on B waits and
    reads on, exact, and the provider is asked once (PROTOCOL.md: Redis failover)."""
    assert fragile_replicas.redis is not None
    key = marker()
    pieces = LONG[:200]  # 4 s
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.02))
    watch = AnswerIdWatch()
    with ThreadPoolExecutor(2) as pool:
        on_a = pool.submit(read, fragile_replicas.a.url, params={"query": key}, on_event=watch)
        path = f"/answers/{watch.wait()}/events"
        following = EventWatch()
        on_b = pool.submit(read, fragile_replicas.b.url, path, on_event=following)
        following.wait()  # both readers are following live

        # Gone for longer than the answer has left, and back empty (nothing was
        # persisted): A's reader gets it all from memory, B's waits for Redis.
        fragile_replicas.redis.stop()
        time.sleep(OUTAGE_SECONDS)
        fragile_replicas.redis.restart()
        reads = [on_a.result(timeout=60), on_b.result(timeout=60)]

    for got in reads:
        assert "done" in got.last, got.last
        assert got.text == "".join(pieces)
        assert seqs(got.ids) == list(range(len(got.ids)))
    assert reads[0].ids == reads[1].ids
    assert len(stub.exchanges_for(key)) == 1
    gaps = [b - a for a, b in zip(reads[1].arrived, reads[1].arrived[1:], strict=False)]
    print(f"Redis away {OUTAGE_SECONDS:g} s: the longest pause on B: {max(gaps):.2f} s")


@pytest.mark.replicas
def test_dropped_redis_connections_are_bridged_and_the_answer_ends_exactly(
    fragile_replicas: Replicas, stub: UpstreamStub
) -> None:
    assert fragile_replicas.redis is not None
    key = marker()
    pieces = [f"d{n} " for n in range(100)]  # 2 s
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.02))
    watch = AnswerIdWatch()
    with ThreadPoolExecutor(2) as pool:
        on_a = pool.submit(read, fragile_replicas.a.url, params={"query": key}, on_event=watch)
        following = EventWatch()
        path = f"/answers/{watch.wait()}/events"
        on_b = pool.submit(read, fragile_replicas.b.url, path, on_event=following)
        following.wait()  # both readers are following live

        # What a proxy's idle timeout or a failover does to every client.
        with fragile_replicas.redis.client() as admin:
            killed = admin.client_kill_filter(_type="normal", skipme=True)
        reads = [on_a.result(timeout=15), on_b.result(timeout=15)]

    assert killed >= 2  # both replicas had connections cut
    for got in reads:
        assert "done" in got.last
        assert got.text == "".join(pieces)
    assert len(stub.exchanges_for(key)) == 1


@pytest.mark.replicas
def test_a_new_answer_while_redis_is_down_is_refused_before_the_stream(
    fragile_replicas: Replicas, stub: UpstreamStub
) -> None:
    assert fragile_replicas.redis is not None
    key = marker()
    fragile_replicas.redis.stop()

    refused = read(fragile_replicas.a.url, params={"query": key}, timeout=15)

    assert refused.status == 503
    assert refused.error()["code"] == "store_unavailable"
    assert refused.error()["retryable"] is True
    assert stub.exchanges_for(key) == []


def test_an_unreachable_redis_at_start_up_stops_the_service_with_one_line(
    refused_start: RefusedStart, stub: UpstreamStub, workdir: Path
) -> None:
    port = free_port()  # nothing listens there
    password = "s3cret-redis-passw0rd"
    settings = {
        **provider_settings("openai", stub),
        "QA_REDIS_URL": f"redis://:{password}@127.0.0.1:{port}/0",
    }

    line = refused_start(settings, workdir)

    assert line == (
        f"qa-service: configuration error: QA_REDIS_URL: cannot reach Redis at "
        f"redis://127.0.0.1:{port}/0 (ConnectionError)"
    )
    assert password not in line
