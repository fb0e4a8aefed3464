"""Ending many answers at random moments, and what Redis holds afterwards: the
scenarios of tests/integration/test_producer_ends.py and benchmarks/producer_ends.py."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.daemon import NotReadyError, wait_until
from tests.support.providers import marker
from tests.support.redis_server import RedisServer
from tests.support.resume import AnswerIdWatch, EventWatch, Read, read
from tests.support.upstream_stub import Reply, UpstreamStub

LONG = [f"w{n} " for n in range(3000)]  # 30 s at 10 ms a piece: ended by its client
# Sent as fast as the stub can (seconds, with QA_MAX_TOKENS at least this
# long): the producer is appending nearly all the time.
FAST = [f"f{n} " for n in range(20000)]
# Tries at each answer's start (store_unavailable is retryable).
STARTS = 5


@dataclass
class Leftovers:
    """What Redis holds once every answer has ended."""

    answers: int
    # A heartbeat still running renews its lease, so its key never goes.
    leases: list[str]
    without_ttl: list[str]


def hang_up_on_answers(urls: Sequence[str], stub: UpstreamStub, count: int) -> None:
    """`count` answers, spread over `urls`, 24 at a time: a third hung up on
    within 10 ms of the response's headers (while the answer's first events
    are being stored), the rest after a random number of text events (0-12)."""
    rng = random.Random()

    def hang_up_once(n: int) -> bytes | None:
        """None once the answer has started and been hung up on, or the body of a refusal."""
        key = marker()
        stub.reply(key, Reply(pieces=LONG, piece_delay=0.01))
        url = urls[n % len(urls)]
        if n % 3 == 0:
            with (
                httpx.Client(timeout=10) as client,
                client.stream("GET", f"{url}/ai_write", params={"query": key}) as response,
            ):
                if response.status_code != 200:
                    return response.read()
                time.sleep(rng.random() * 0.01)
            return None
        got = read(url, params={"query": key}, texts=rng.randrange(13))
        return None if got.status == 200 else got.body

    def hang_up(n: int) -> None:
        # A starved service (two cores, other test processes busy beside it) can
        # miss the store's deadline at an answer's start: 503 store_unavailable,
        # retryable. That answer never started, and its client asks again.
        for _ in range(STARTS):
            refused = hang_up_once(n)
            if refused is None:
                return
            assert b'"store_unavailable"' in refused, refused
            time.sleep(0.5)
        raise AssertionError(f"refused {STARTS} times: {refused!r}")

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(hang_up, range(count)))


def cancel_answers(urls: Sequence[str], stub: UpstreamStub, count: int) -> list[str]:
    """`count` fast answers, spread over `urls`, each cancelled (POST
    /answers/{id}/cancel) at a random moment within 0.3 s of its first text,
    6 at a time; how each one's reader saw it end (an error code, or "done")."""
    rng = random.Random()

    def cancel_one(n: int) -> str:
        key = marker()
        stub.reply(key, Reply(pieces=FAST))
        url = urls[n % len(urls)]
        watch, following = AnswerIdWatch(), EventWatch()
        with ThreadPoolExecutor(1) as pool:
            reading = pool.submit(read, url, params={"query": key}, on_event=both(watch, following))
            answer_id = watch.wait()
            following.wait(2)  # the meta and a first text
            time.sleep(rng.random() * 0.3)
            response = httpx.post(f"{url}/answers/{answer_id}/cancel", timeout=10)
            assert response.status_code == 200, response.text
            whole = reading.result(timeout=20)
        return str(whole.last.get("error", {}).get("code", "done"))

    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(cancel_one, range(count)))


@dataclass
class StalledEnd:
    """How an answer whose last event met a Redis stall ended for its readers."""

    answer_id: str
    # The reader on the producing replica, and when its last event came,
    # counted from the stall's end.
    here: Read
    here_after_stall: float
    # A reader on another replica, from the stall's end.
    elsewhere: Read


PIECES = ["a ", "b ", "c "]


def stall_at_the_end(
    here: str,
    elsewhere: str,
    redis: RedisServer,
    stub: UpstreamStub,
    stall: float = 2.8,
    timeout: float = 30.0,
) -> StalledEnd:
    """An answer on `here` whose last event comes 0.3 s into a Redis stall of
    `stall` seconds (SIGSTOP, then SIGCONT), read on `here` from its start
    (for up to `timeout` s), and on `elsewhere` by its id once the stall is over."""
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, finish_delay=0.3))
    watch, texts = AnswerIdWatch(), TextWatch()
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(
            read, here, params={"query": key}, on_event=both(watch, texts), timeout=timeout
        )
        answer_id = watch.wait()
        texts.wait("".join(PIECES))
        os.kill(redis.pid, signal.SIGSTOP)
        try:
            time.sleep(stall)
        finally:
            os.kill(redis.pid, signal.SIGCONT)
            resumed_at = time.monotonic()
        got_elsewhere = read(elsewhere, f"/answers/{answer_id}/events")
        got_here = reading.result(timeout=timeout + 10)
    return StalledEnd(answer_id, got_here, got_here.arrived[-1] - resumed_at, got_elsewhere)


def leftovers(redis: RedisServer, answers: int, timeout: float = 15.0) -> Leftovers:
    """Waits until every lease has gone (released by its producer, or lapsed
    once its heartbeat stopped), up to `timeout`; then what is left."""
    with suppress(NotReadyError):  # the leases left are the figure
        wait_until(lambda: not _lease_keys(redis), timeout, "every producer's lease gone")
    return Leftovers(answers, _lease_keys(redis), _keys_without_ttl(redis))


def _lease_keys(redis: RedisServer) -> list[str]:
    with redis.client() as client:
        return [key.decode() for key in client.scan_iter("qa:answer:*:lease", count=1000)]


def _keys_without_ttl(redis: RedisServer) -> list[str]:
    with redis.client() as client:
        keys = list(client.scan_iter("qa:answer:*", count=1000))
        return [key.decode() for key in keys if client.ttl(key) == -1]


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


def both(*watches: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """One `on_event` that feeds every watch."""

    def on_event(payload: dict[str, Any]) -> None:
        for watch in watches:
            watch(payload)

    return on_event
