"""Adaptive coalescing through the real service: chunks that arrive together go out
together, exactly; a chunk that has not arrived is never waited for."""

from __future__ import annotations

import itertools

from tests.integration.test_answers import HARD_PIECES
from tests.support.providers import marker
from tests.support.service import RunningService
from tests.support.sse import read_stream
from tests.support.upstream_stub import Reply, UpstreamStub

PIECES = [HARD_PIECES[n % len(HARD_PIECES)] + str(n) for n in range(200)]


def test_chunks_that_arrive_together_go_out_as_fewer_events_exactly(
    service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    usage = {"prompt_tokens": 12, "completion_tokens": 200, "total_tokens": 212}
    stub.reply(key, Reply(pieces=PIECES, usage=usage, burst=True))

    stream = read_stream(service.url, params={"query": key})

    assert stream.text == "".join(PIECES)
    # One network read brought them all: without coalescing, 200 text events.
    assert stream.kinds.count("text") < 20
    done = stream.last["done"]
    assert done["finish_reason"] == "stop"
    assert done["usage"] == {"input_tokens": 12, "output_tokens": 200, "total_tokens": 212}
    assert done["chars"] == len("".join(PIECES))


def test_pieces_that_arrive_apart_each_go_out_at_once(
    service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = ["one ", "two ", "three ", "four."]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.3))

    stream = read_stream(service.url, params={"query": key})

    texts = [e["text"] for e in stream.events if "text" in e]
    assert texts == pieces
    # Each went out as it came, 0.3 s apart: none was held for the next.
    times = [t for t, e in zip(stream.arrived, stream.events, strict=True) if "text" in e]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap > 0.15 for gap in gaps), gaps
