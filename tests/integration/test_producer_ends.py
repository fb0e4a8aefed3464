"""How an answer's producer ends in Redis mode, at any moment: no heartbeat outlives
it, every key it wrote expires, and its readers get the end Redis holds.

Issue 20, items 1 (the heartbeat, on Python 3.11), 4 (a Redis stall at the
last event) and 5 (a cancel that lands during an append). Each test ends a few
hundred answers, or stalls a real redis-server, and then reads what Redis holds.
benchmarks/producer_ends.py gives the same figures for one replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.producer_ends import (
    FAST,
    PIECES,
    Leftovers,
    cancel_answers,
    hang_up_on_answers,
    leftovers,
    stall_at_the_end,
)
from tests.support.providers import provider_settings
from tests.support.redis_server import RedisServer, run_redis
from tests.support.service import RunningService, run_services
from tests.support.upstream_stub import UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

HANGUPS = 300
CANCELS = 60


@dataclass
class Producers:
    # A heartbeat every 1/6 s (the shortest lease, 0.5 s): many are in flight
    # when answers end (item 1's race needs a Redis command in flight).
    quick: RunningService
    # The default lease (3 s): an answer ended within its first second has had
    # one heartbeat, maybe before its stream existed (item 5's keys with no TTL).
    steady: RunningService
    redis: RedisServer

    @property
    def urls(self) -> tuple[str, str]:
        return self.quick.url, self.steady.url


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
        quick_settings = {**settings, "QA_PRODUCER_LEASE_SECONDS": "0.5"}
        quick, steady = stack.enter_context(run_services([quick_settings, settings], workdir))
        yield Producers(quick, steady, redis)


@pytest.fixture(scope="module")
def after_hangups(producers: Producers, stub: UpstreamStub) -> Leftovers:
    """HANGUPS answers, half on each replica, hung up on at random moments."""
    hang_up_on_answers(producers.urls, stub, HANGUPS)
    return leftovers(producers.redis, HANGUPS)


def test_no_heartbeat_outlives_its_answer(after_hangups: Leftovers) -> None:
    # Issue 20, item 1: on Python 3.11 a single cancel() left 8-16 of 300 running.
    leaked = after_hangups.leases
    assert leaked == [], f"{len(leaked)} of {after_hangups.answers} heartbeats still run"


def test_every_key_of_an_ended_answer_expires(after_hangups: Leftovers) -> None:
    # Issue 20, item 5: hang-ups during an append left 16 of 300 streams with no TTL.
    kept = after_hangups.without_ttl
    assert kept == [], f"{len(kept)} keys of {after_hangups.answers} answers never expire"


def test_every_explicit_cancel_ends_its_reader_with_cancelled(
    producers: Producers, stub: UpstreamStub
) -> None:
    """Cancels at random moments of a fast answer (an append is nearly always in
    flight): every reader ends with `cancelled`, never `producer_lost`."""
    ends = cancel_answers(producers.urls, stub, CANCELS)

    wrong = [end for end in ends if end != "cancelled"]
    assert wrong == [], f"{len(wrong)} of {CANCELS} cancelled answers ended otherwise: {wrong}"


def test_a_redis_stall_at_the_last_event_leaves_local_readers_the_end(
    producers: Producers, stub: UpstreamStub
) -> None:
    """Redis stops (SIGSTOP) for 2.8 s just as the answer's last event is being
    stored; it stores it once it runs again. The reader on the producing
    replica gets that end, as a reader on the other replica does. Read for up
    to 30 s: far below the TTL (300 s), where a lost end showed."""
    ended = stall_at_the_end(producers.steady.url, producers.quick.url, producers.redis, stub)

    assert "done" in ended.elsewhere.last
    assert ended.here.last == ended.elsewhere.last
    assert ended.here.text == ended.elsewhere.text == "".join(PIECES)
