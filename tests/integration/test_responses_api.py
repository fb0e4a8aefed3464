"""POST /v1/responses and its stored responses, driven by the official `openai` package
against the real service and the provider stub."""

from __future__ import annotations

import openai
import pytest

from tests.integration.test_answers import HARD_PIECES
from tests.support.providers import marker
from tests.support.service import RunningService
from tests.support.upstream_stub import Reply, UpstreamStub

USAGE = {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38}
OPENING = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
ENDING = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def _client(service: RunningService, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{service.url}/v1", api_key="unused", max_retries=retries, timeout=60
    )


def test_a_streamed_response_gives_the_exact_text_in_openais_event_order(
    service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=HARD_PIECES, write_slice_bytes=1, usage=USAGE))

    with _client(service) as client:
        events = list(client.responses.create(model="chat", input=key, stream=True))

    types = [event.type for event in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert types == [*OPENING, *["response.output_text.delta"] * len(deltas), *ENDING]
    assert "".join(d.delta for d in deltas) == "".join(HARD_PIECES)
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(set(numbers))
    completed = events[-1].response
    assert completed.output_text == "".join(HARD_PIECES)
    assert completed.usage is not None
    assert (completed.usage.input_tokens, completed.usage.output_tokens) == (31, 7)
    assert completed.id.startswith("resp_")
