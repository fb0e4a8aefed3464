"""Resuming a Responses stream (`GET /v1/responses/{id}?stream=true&starting_after=N`)
on the other replica over Redis, driven by the official `openai` package.

Two service processes share a real redis-server, with API keys on: each key is
a client, and a stored response is its client's alone. A stream read on replica
A is cut, and read on from replica B with no new upstream call.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import openresponses_types as ort
import pytest
from openai.types.responses import ResponseStreamEvent

from tests.support.providers import marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.service import RunningService, run_services
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = pytest.mark.replicas

# Fake keys, made per run: two clients of the same replicas.
OWNER_KEY = f"qa-owner-{secrets.token_urlsafe(24)}"
OTHER_KEY = f"qa-other-{secrets.token_urlsafe(24)}"
PIECES = [f"w{n} " for n in range(60)]  # 1.2 s at 20 ms a piece: still live at the cut
DELTA = "response.output_text.delta"
ENDING = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
# Open Responses' type of each event (it has no union type to dispatch on).
EVENT_TYPES: dict[str, type[Any]] = {
    "response.created": ort.ResponseCreatedStreamingEvent,
    "response.in_progress": ort.ResponseInProgressStreamingEvent,
    "response.output_item.added": ort.ResponseOutputItemAddedStreamingEvent,
    "response.content_part.added": ort.ResponseContentPartAddedStreamingEvent,
    DELTA: ort.ResponseOutputTextDeltaStreamingEvent,
    "response.output_text.done": ort.ResponseOutputTextDoneStreamingEvent,
    "response.content_part.done": ort.ResponseContentPartDoneStreamingEvent,
    "response.output_item.done": ort.ResponseOutputItemDoneStreamingEvent,
    "response.completed": ort.ResponseCompletedStreamingEvent,
}


@dataclass
class Replicas:
    a: RunningService
    b: RunningService


@pytest.fixture(scope="module")
def replicas(stub: UpstreamStub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    workdir = tmp_path_factory.mktemp("responses-resume")
    with run_redis(workdir) as redis:
        # The default resume grace: a cut stream's answer runs on for its reader to come back.
        settings = {
            **provider_settings("openai", stub),
            "QA_REDIS_URL": redis.url,
            "QA_API_KEYS": f"{OWNER_KEY},{OTHER_KEY}",
        }
        with run_services([settings] * 2, workdir) as (a, b):
            yield Replicas(a, b)


def _client(service: RunningService, key: str = OWNER_KEY) -> openai.OpenAI:
    # Every read below is bounded by this timeout (keep-alives cannot stretch a
    # stream past the deltas it reads: the stub's pieces come every 20 ms).
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0, timeout=30)


def _cut(service: RunningService, question: str, deltas: int) -> list[ResponseStreamEvent]:
    """Stream a new response, and close the stream after `deltas` text deltas
    (after the opening's first `-deltas` events when negative)."""
    seen: list[ResponseStreamEvent] = []
    with _client(service) as client:
        stream = client.responses.create(model="chat", input=question, stream=True)
        try:
            for event in stream:
                seen.append(event)
                wanted = sum(e.type == DELTA for e in seen) if deltas > 0 else len(seen)
                if wanted >= abs(deltas):
                    break
        finally:
            stream.close()
    return seen


def _resume(service: RunningService, response_id: str, after: int) -> list[ResponseStreamEvent]:
    with (
        _client(service) as client,
        client.responses.retrieve(response_id, stream=True, starting_after=after) as stream,
    ):
        return list(stream)


def _text(events: list[ResponseStreamEvent]) -> str:
    return "".join(e.delta for e in events if e.type == DELTA)


def _numbers(events: list[ResponseStreamEvent]) -> list[int]:
    return [e.sequence_number for e in events]


def _assert_valid(events: list[ResponseStreamEvent]) -> None:
    """Each event as sent validates against the Open Responses types."""
    for event in events:
        EVENT_TYPES[event.type].model_validate(json.loads(event.model_dump_json()))


def test_a_stream_cut_on_one_replica_resumes_on_the_other_exactly(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, piece_delay=0.02))

    first = _cut(replicas.a, key, deltas=5)
    response_id = first[0].response.id  # type: ignore[union-attr]
    rest = _resume(replicas.b, response_id, after=first[-1].sequence_number)

    assert first[-1].type == DELTA
    assert rest[0].type == DELTA  # nothing the client has comes again, the opening neither
    assert [e.type for e in rest[-4:]] == ENDING
    assert _text(first) + _text(rest) == "".join(PIECES)
    numbers = _numbers(first) + _numbers(rest)
    assert len(set(numbers)) == len(numbers)
    assert numbers == sorted(numbers)
    completed = rest[-1].response  # type: ignore[union-attr]
    assert completed.id == response_id
    assert completed.output_text == "".join(PIECES)
    _assert_valid(rest)
    assert len(stub.exchanges_for(key)) == 1


def test_the_sdks_stream_helper_resumes_from_the_whole_replay(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    """`responses.stream(response_id=..., starting_after=N)` sends no
    starting_after: it reads the replay from number 0 (its accumulator needs
    `response.created`) and drops the numbers up to N itself."""
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, piece_delay=0.02))
    first = _cut(replicas.a, key, deltas=5)
    response_id = first[0].response.id  # type: ignore[union-attr]
    after = first[-1].sequence_number

    with (
        _client(replicas.b) as client,
        client.responses.stream(response_id=response_id, starting_after=after) as stream,
    ):
        rest = list(stream)
        final = stream.get_final_response()

    assert final.output_text == "".join(PIECES)
    assert final.status == "completed"
    assert _text(first) + _text(rest) == "".join(PIECES)
    assert min(_numbers(rest)) == after + 1
    assert len(stub.exchanges_for(key)) == 1


def test_another_clients_resume_is_not_found(replicas: Replicas, stub: UpstreamStub) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, piece_delay=0.02))
    first = _cut(replicas.a, key, deltas=5)
    response_id = first[0].response.id  # type: ignore[union-attr]

    with _client(replicas.b, OTHER_KEY) as other:
        with pytest.raises(openai.NotFoundError) as resumed:
            other.responses.retrieve(response_id, stream=True, starting_after=4)
        with pytest.raises(openai.NotFoundError) as retrieved:
            other.responses.retrieve(response_id)
        with pytest.raises(openai.NotFoundError) as cancelled:
            other.responses.cancel(response_id)

    for refused in (resumed, retrieved, cancelled):
        assert refused.value.code == "response_not_found"
    # Its own client still reads it whole: the refusals touched nothing.
    rest = _resume(replicas.b, response_id, after=first[-1].sequence_number)
    assert _text(first) + _text(rest) == "".join(PIECES)
    assert len(stub.exchanges_for(key)) == 1


def test_starting_after_the_last_event_gives_none_and_far_beyond_is_refused(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES[:5]))
    with _client(replicas.a) as client:
        whole = list(client.responses.create(model="chat", input=key, stream=True))
    response_id = whole[0].response.id  # type: ignore[union-attr]
    last = whole[-1].sequence_number

    after_the_end = _resume(replicas.b, response_id, after=last)
    with pytest.raises(openai.BadRequestError) as far_beyond:
        _resume(replicas.b, response_id, after=last + 1000)

    assert whole[-1].type == "response.completed"
    assert after_the_end == []
    assert far_beyond.value.status_code == 400
    assert len(stub.exchanges_for(key)) == 1


def test_a_resume_within_the_opening_sends_the_rest_of_it_once(
    replicas: Replicas, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, piece_delay=0.02))

    first = _cut(replicas.a, key, deltas=-2)  # created, in_progress
    rest = _resume(replicas.b, first[0].response.id, after=1)  # type: ignore[union-attr]

    assert [e.type for e in first] == ["response.created", "response.in_progress"]
    assert [e.type for e in rest[:2]] == [
        "response.output_item.added",
        "response.content_part.added",
    ]
    numbers = _numbers(first) + _numbers(rest)
    assert numbers[:4] == [0, 1, 2, 3]
    assert len(set(numbers)) == len(numbers)
    assert numbers == sorted(numbers)
    assert _text(rest) == "".join(PIECES)
    _assert_valid(rest)
    assert len(stub.exchanges_for(key)) == 1


@pytest.mark.parametrize("seen", ENDING[:3])
def test_a_resume_within_the_ending_sends_the_rest_of_it_exactly(
    replicas: Replicas, stub: UpstreamStub, seen: str
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES[:8]))
    with _client(replicas.a) as client:
        whole = list(client.responses.create(model="chat", input=key, stream=True))
    (cut,) = [e for e in whole if e.type == seen]
    tail = whole[whole.index(cut) + 1 :]

    rest = _resume(replicas.b, whole[0].response.id, after=cut.sequence_number)  # type: ignore[union-attr]

    # The ending, rebuilt on B from the log, is the ending A sent, number for number.
    assert [e.model_dump() for e in rest] == [e.model_dump() for e in tail]
    assert rest[-1].response.output_text == "".join(PIECES[:8])  # type: ignore[union-attr]
    _assert_valid(rest)
    assert len(stub.exchanges_for(key)) == 1
