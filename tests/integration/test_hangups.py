"""Hang-ups at random points never let an answer run on: the cancel takes effect every time.

One try per case cannot show this: on Python 3.11 a cancel that lands just as
a chunk is ready used to be lost (langchain-openai's asyncio.wait_for), and
then 2 answers in 26 ran to the end, every token paid for. So each provider
gets 200 hang-ups, spread over where a cancel can land.
"""

from __future__ import annotations

import functools
import json
import random
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.support.providers import marker
from tests.support.service import RunningService
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = pytest.mark.slow

HANGUPS = 200
CONCURRENCY = 4
SEED = 20261122


@dataclass
class HangUp:
    key: str
    case: str
    at: float  # time.monotonic() when the client's connection was gone
    request_id: str | None
    # The client saw the answer's last event first (it ended at the output cap:
    # under load one text event can hold many provider chunks, generation/batching.py).
    saw_the_end: bool = False


def _read_then_leave(
    service: RunningService, key: str, texts: int, linger: float
) -> tuple[float, str, bool]:
    """Read `texts` text events (0: just meta), wait `linger` s, then hang up.
    Also says whether the answer's last event came first."""
    with httpx.stream(
        "GET", f"{service.url}/ai_write", params={"query": key}, timeout=10
    ) as response:
        seen, ended = 0, False
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            seen += "text" in event
            ended = "done" in event or "error" in event
            if seen >= texts or ended:  # with texts=0, right after meta
                time.sleep(linger)
                break
    return time.monotonic(), response.headers["x-request-id"], ended


def _read_slowly_then_leave(
    service: RunningService, key: str, reading: float
) -> tuple[float, str | None]:
    """A client with a tiny receive buffer that reads a trickle, then hangs up."""
    port = int(service.url.rsplit(":", 1)[1])
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        client.connect(("127.0.0.1", port))
        client.sendall(f"GET /ai_write?query={key} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        client.settimeout(1.0)
        received = b""
        until = time.monotonic() + reading
        while time.monotonic() < until:
            received += client.recv(64)
            time.sleep(0.005)
    head = received.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    request_id = re.search(r"^x-request-id: (\S+)", head, re.MULTILINE)
    return time.monotonic(), request_id.group(1) if request_id else None


def _cases(
    service: RunningService, stub: UpstreamStub, rng: random.Random
) -> list[Callable[[], HangUp]]:
    """Each case scripts the stub for a fresh marker and returns how to hang up.

    Every random choice is drawn here, in the test's own thread, so the seed
    reproduces a run whichever worker thread runs which case.
    """
    words = [f"w{n} " for n in range(1000)]

    def before_first_token(linger: float) -> HangUp:
        key = marker()
        stub.reply(key, Reply(pieces=words, first_delay=0.5, piece_delay=0.02))
        return HangUp(key, "before the first token", *_read_then_leave(service, key, 0, linger))

    def inside_a_read(texts: int, linger: float) -> HangUp:
        key = marker()
        stub.reply(key, Reply(pieces=words, piece_delay=0.02))
        return HangUp(key, "inside a read", *_read_then_leave(service, key, texts, linger))

    def mid_chunk(texts: int, linger: float) -> HangUp:
        key = marker()
        stub.reply(key, Reply(pieces=words, write_slice_bytes=16))
        return HangUp(key, "mid-chunk", *_read_then_leave(service, key, texts, linger))

    def between_chunks_of_a_burst(texts: int) -> HangUp:
        key = marker()
        # As fast as the service can take it, but paced at the source: unpaced,
        # the whole answer would fit in the sockets' buffers, and the stub would
        # have "finished" before any hang-up could reach it.
        stub.reply(key, Reply(pieces=words * 5, piece_delay=0.001))
        read = _read_then_leave(service, key, texts, 0)
        return HangUp(key, "between chunks of a burst", *read)

    def under_a_slow_reader(reading: float) -> HangUp:
        key = marker()
        stub.reply(key, Reply(pieces=words, piece_delay=0.002))
        at, rid = _read_slowly_then_leave(service, key, reading)
        return HangUp(key, "under a slow reader", at, rid)

    draws: list[Callable[[], Callable[[], HangUp]]] = [
        lambda: functools.partial(before_first_token, rng.uniform(0, 0.25)),
        lambda: functools.partial(inside_a_read, rng.randint(1, 10), rng.uniform(0, 0.02)),
        lambda: functools.partial(mid_chunk, rng.randint(1, 10), rng.uniform(0, 0.005)),
        lambda: functools.partial(between_chunks_of_a_burst, rng.randint(1, 50)),
        lambda: functools.partial(under_a_slow_reader, rng.uniform(0.1, 0.4)),
    ]
    return [draws[n % len(draws)]() for n in range(HANGUPS)]


def test_200_hangups_at_random_points_never_let_an_answer_run_on(
    service: RunningService, stub: UpstreamStub
) -> None:
    rng = random.Random(SEED)
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        hangups = list(pool.map(lambda case: case(), _cases(service, stub, rng)))

    late: list[str] = []
    for hangup in hangups:
        if not stub.exchanges_for(hangup.key):
            # Left before the upstream request was sent. Give a late one the
            # time it would need to arrive; then it must have closed too.
            time.sleep(0.2)
            if not stub.exchanges_for(hangup.key):
                continue
        assert len(stub.exchanges_for(hangup.key)) == 1, hangup
        try:
            closed = stub.wait_closed(hangup.key, timeout=5.0)
        except AssertionError:
            late.append(f"{hangup.case}: never")
            continue
        assert not closed.completed, hangup
        if closed.client_closed_at - hangup.at >= 1.0:
            late.append(f"{hangup.case}: {closed.client_closed_at - hangup.at:.2f} s")
    assert late == [], f"upstream closed later than 1 s after the hang-up (seed {SEED})"

    ids = [h.request_id for h in hangups if h.request_id is not None and not h.saw_the_end]
    outcomes = [service.answer_record(rid, timeout=30)["outcome"] for rid in ids]
    assert outcomes.count("complete") == 0
    assert set(outcomes) == {"client_disconnected"}
