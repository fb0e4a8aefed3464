"""Coalescing through the real service. Adaptive, below the chain: chunks that arrive
together go out together, exactly; a chunk that has not arrived is never waited for.
On the wire (QA_COALESCE_MS): runs of text go as one event in every dialect, and
resuming from one continues exactly after it."""

from __future__ import annotations

import itertools

import openai
import pytest

from tests.integration.test_ai_sdk_chat import chat_body, read_chat
from tests.integration.test_answers import HARD_PIECES
from tests.support.providers import marker, provider_settings
from tests.support.resume import read, seqs
from tests.support.service import RunningService, SharedServices
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


@pytest.fixture
def windowed(stub: UpstreamStub, shared_services: SharedServices) -> RunningService:
    return shared_services.one({**provider_settings("openai", stub), "QA_COALESCE_MS": "400"})


def test_with_a_window_runs_of_text_go_as_one_event_and_resume_exactly_after_it(
    windowed: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [f"{PIECES[n]}" for n in range(24)]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.05))

    whole = read(windowed.url, params={"query": key})

    assert whole.text == "".join(pieces)
    texts = [n for n, event in enumerate(whole.events) if "text" in event]
    # 24 pieces 50 ms apart, in runs of at most 400 ms: a handful of events.
    assert 2 <= len(texts) <= 8
    assert whole.last["done"]["finish_reason"] == "stop"
    # Each merged event carries the seq of its last text: the log numbers every piece.
    assert seqs(whole.ids)[-1] == len(pieces) + 1
    first = texts[0]
    rest = read(windowed.url, f"/answers/{whole.answer_id}/events", last_event_id=whole.ids[first])
    assert whole.events[first]["text"] + rest.text == "".join(pieces)
    assert rest.last["done"]["finish_reason"] == "stop"


def test_with_a_window_the_openai_dialect_sends_fewer_chunks_with_exact_text_finish_and_usage(
    windowed: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = PIECES[:24]
    usage = {"prompt_tokens": 9, "completion_tokens": 24, "total_tokens": 33}
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.05, usage=usage))

    with openai.OpenAI(base_url=f"{windowed.url}/v1", api_key="unused", max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": key}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(contents) == "".join(pieces)
    # 24 pieces 50 ms apart, in runs of at most 400 ms: a handful of chunks.
    assert 2 <= len(contents) <= 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(include=set(usage)) == usage


def test_with_a_window_the_ai_sdk_stream_sends_fewer_text_deltas_exactly(
    windowed: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = PIECES[:24]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.05))

    chat = read_chat(windowed.url, chat_body(key))

    assert chat.text == "".join(pieces)
    assert 2 <= chat.types.count("text-delta") <= 8
    assert chat.chunks[-1] == {"type": "finish", "finishReason": "stop"}
