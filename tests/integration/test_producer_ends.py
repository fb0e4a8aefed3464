"""How an answer's producer ends in Redis mode, at any moment: no heartbeat outlives
it, every key it wrote expires, and its readers get the end Redis holds.

Issue 20, items 1 (the heartbeat, on Python 3.11), 4 (a Redis stall at the
last event) and 5 (a cancel that lands during an append). Each test ends a few
hundred answers, or stalls a real redis-server, and then reads what Redis holds.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.daemon import NotReadyError, wait_until
from tests.support.providers import marker, provider_settings
from tests.support.redis_server import RedisServer, run_redis
from tests.support.resume import AnswerIdWatch, EventWatch, Read, read
from tests.support.service import RunningService, run_services
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

LONG = [f"w{n} " for n in range(3000)]  # 30 s at 10 ms a piece: ended by its client
# Sent as fast as the stub can (seconds, with QA_MAX_TOKENS raised to let it
# run): the producer is appending nearly all the time.
FAST = [f"f{n} " for n in range(20000)]
HANGUPS = 300
CANCELS = 60
# The shortest lease there is: a heartbeat every 1/6 s, so many are in flight
# when answers end (item 1's race needs a Redis command in flight at the cancel).
QUICK_LEASE = 0.5


@dataclass
class Producers:
    # A heartbeat every 1/6 s (QUICK_LEASE).
    quick: RunningService
    # The default lease (3 s): an answer ended within its first second has had
    # one heartbeat, before its stream existed (item 5's keys with no TTL).
    steady: RunningService
    redis: RedisServer

    @property
    def both(self) -> tuple[RunningService, RunningService]:
        return self.quick, self.steady


@pytest.fixture(scope="module")
def producers(stub: UpstreamStub, workdir: Path) -> Iterator[Producers]:
    """Two replicas with no resume grace (a hang-up ends the answer at once)."""
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(workdir))
        settings = {
            **provider_settings("openai", stub),
            "QA_REDIS_URL": redis.url,
            "QA_RESUME_GRACE_SECONDS": "0",
            "QA_MAX_TOKENS": str(len(FAST)),
        }
        quick_settings = {**settings, "QA_PRODUCER_LEASE_SECONDS": str(QUICK_LEASE)}
        quick, steady = stack.enter_context(run_services([quick_settings, settings], workdir))
        yield Producers(quick, steady, redis)


@dataclass
class Leftovers:
    """What Redis holds once every answer has ended."""

    answers: int
    leases: list[str]
    without_ttl: list[str]


def _lease_keys(redis: RedisServer) -> list[str]:
    with redis.client() as client:
        return [key.decode() for key in client.scan_iter("qa:answer:*:lease", count=1000)]


def _keys_without_ttl(redis: RedisServer) -> list[str]:
    with redis.client() as client:
        keys = list(client.scan_iter("qa:answer:*", count=1000))
        return [key.decode() for key in keys if client.ttl(key) == -1]


def _leftovers(redis: RedisServer, answers: int) -> Leftovers:
    """Waits until every lease has gone: released by its producer, or lapsed
    (3 s at most) once its heartbeat stopped. A heartbeat still running renews
    its lease every third of it, so its key never goes."""
    with suppress(NotReadyError):  # the leases left are the figure
        wait_until(lambda: not _lease_keys(redis), 15, "every producer's lease gone")
    return Leftovers(answers, _lease_keys(redis), _keys_without_ttl(redis))


@pytest.fixture(scope="module")
def after_hangups(producers: Producers, stub: UpstreamStub) -> Leftovers:
    """HANGUPS answers, half on each replica, each hung up on after a random
    number of events (0-12)."""
    rng = random.Random()

    def hang_up(n: int) -> Read:
        key = marker()
        stub.reply(key, Reply(pieces=LONG, piece_delay=0.01))
        service = producers.both[n % 2]
        return read(service.url, params={"query": key}, texts=rng.randrange(13))

    with ThreadPoolExecutor(24) as pool:
        reads = list(pool.map(hang_up, range(HANGUPS)))
    assert all(r.status == 200 for r in reads)
    return _leftovers(producers.redis, HANGUPS)


def test_no_heartbeat_outlives_its_answer(after_hangups: Leftovers) -> None:
    # Issue 20, item 1: on Python 3.11 a single cancel() left 8-16 of 300 running.
    leaked = after_hangups.leases
    assert leaked == [], f"{len(leaked)} of {after_hangups.answers} heartbeats still run"


def test_every_key_of_an_ended_answer_expires(after_hangups: Leftovers) -> None:
    # Issue 20, item 5: a hang-up during an append left 16 of 300 streams with no TTL.
    kept = after_hangups.without_ttl
    assert kept == [], f"{len(kept)} keys of {after_hangups.answers} answers never expire"


def test_every_explicit_cancel_ends_its_reader_with_cancelled(
    producers: Producers, stub: UpstreamStub
) -> None:
    """Cancels at random moments of a fast answer (an append is nearly always in
    flight): every reader ends with `cancelled`, never `producer_lost`."""
    rng = random.Random()

    def cancel_one(n: int) -> str:
        key = marker()
        stub.reply(key, Reply(pieces=FAST))
        url = producers.both[n % 2].url
        watch, following = AnswerIdWatch(), EventWatch()
        with ThreadPoolExecutor(1) as pool:
            reading = pool.submit(
                read, url, params={"query": key}, on_event=_both(watch, following)
            )
            answer_id = watch.wait()
            following.wait(2)  # the meta and a first text
            time.sleep(rng.random() * 0.3)
            response = httpx.post(f"{url}/answers/{answer_id}/cancel", timeout=10)
            assert response.status_code == 200
            whole = reading.result(timeout=20)
        return str(whole.last.get("error", {}).get("code", "done"))

    with ThreadPoolExecutor(6) as pool:
        ends = list(pool.map(cancel_one, range(CANCELS)))
    wrong = [end for end in ends if end != "cancelled"]
    assert wrong == [], f"{len(wrong)} of {CANCELS} cancelled answers ended otherwise: {wrong}"


def test_a_redis_stall_at_the_last_event_leaves_local_readers_the_end(
    producers: Producers, stub: UpstreamStub
) -> None:
    """Redis stops (SIGSTOP) for 2.8 s just as the answer's last event is being
    stored; it stores it once it runs again. The reader on the producing
    replica gets that end, as a reader on the other replica does."""
    key = marker()
    pieces = ["a ", "b ", "c "]
    # The end comes 0.3 s after the last text: into the stall.
    stub.reply(key, Reply(pieces=pieces, finish_delay=0.3))
    watch, texts = AnswerIdWatch(), TextWatch()
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(
            read,
            producers.steady.url,
            params={"query": key},
            on_event=_both(watch, texts),
            timeout=30,  # far below the TTL (300 s), where a lost end showed
        )
        answer_id = watch.wait()
        texts.wait("".join(pieces))
        os.kill(producers.redis.pid, signal.SIGSTOP)
        try:
            time.sleep(2.8)  # the stall the review measured
        finally:
            os.kill(producers.redis.pid, signal.SIGCONT)
        here = reading.result(timeout=40)
    elsewhere = read(producers.quick.url, f"/answers/{answer_id}/events")

    assert "done" in elsewhere.last
    assert here.last == elsewhere.last
    assert here.text == elsewhere.text == "".join(pieces)


class TextWatch:
    """Pass as `on_event` to a read in another thread; `wait(text)` returns once
    that read has had all of `text` (however its pieces were merged)."""

    def __init__(self) -> None:
        self._text = ""
        self._changed = threading.Condition()

    def __call__(self, payload: dict[str, Any]) -> None:
        with self._changed:
            self._text += payload.get("text", "")
            self._changed.notify_all()

    def wait(self, text: str, timeout: float = 10.0) -> None:
        with self._changed:
            reached = self._changed.wait_for(lambda: self._text == text, timeout)
        assert reached, f"read {self._text!r} in {timeout} s, expected {text!r}"


def _both(*watches: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def on_event(payload: dict[str, Any]) -> None:
        for watch in watches:
            watch(payload)

    return on_event
