"""The Open Responses compliance cases that apply to a text prompt, re-enacted.

The suite itself (github.com/openresponses/openresponses, `bun run
bin/compliance-test.ts`) lives only in its repository, which these machines
cannot fetch. Its cases are small: each sends one body (with `stream` set
explicitly, as the suite does), requires a 2xx, validates the response (or,
streamed, every event and the final response) against the specification's
schema, then checks what the case is about. Here the same bodies, and the
same validation through `openresponses-types`, generated from the same
OpenAPI document. The suite's tool, image and file cases do not apply: those
inputs are refused with a 400 (docs/PROTOCOL.md).
"""

from __future__ import annotations

from typing import Any

import httpx
import openresponses_types as ort

from tests.integration.test_responses_api import raw_events
from tests.support.service import RunningService
from tests.support.upstream_stub import UpstreamStub


def _create(service: RunningService, body: dict[str, Any]) -> ort.ResponseResource:
    response = httpx.post(
        f"{service.url}/v1/responses",
        json={**body, "stream": False},
        headers={"Authorization": "Bearer compliance"},
        timeout=60,
    )
    assert response.is_success, response.text
    return ort.ResponseResource.model_validate(response.json())


def _completed_with_output(response: ort.ResponseResource) -> None:
    assert response.status == "completed"
    assert response.output
    assert response.output[0].content[0].text  # type: ignore[union-attr]


def test_basic_response(openai_service: RunningService, stub: UpstreamStub) -> None:
    body = {
        "model": "chat",
        "input": [{"type": "message", "role": "user", "content": "Say hello in exactly 3 words."}],
    }

    _completed_with_output(_create(openai_service, body))


def test_streaming_response(openai_service: RunningService, stub: UpstreamStub) -> None:
    body = {
        "model": "chat",
        "input": [{"type": "message", "role": "user", "content": "Count from 1 to 5."}],
    }

    # Every event validated against its Open Responses type on the way.
    events = raw_events(openai_service, body)

    assert events
    assert events[-1]["type"] == "response.completed"
    _completed_with_output(ort.ResponseResource.model_validate(events[-1]["response"]))


def test_system_prompt(openai_service: RunningService, stub: UpstreamStub) -> None:
    body = {
        "model": "chat",
        "input": [
            {
                "type": "message",
                "role": "system",
                "content": "You are a pirate. Always respond in pirate speak.",
            },
            {"type": "message", "role": "user", "content": "Say hello."},
        ],
    }

    # Passes with the system item left out (the prompt's own system part applies).
    _completed_with_output(_create(openai_service, body))


def test_multi_turn(openai_service: RunningService, stub: UpstreamStub) -> None:
    body = {
        "model": "chat",
        "input": [
            {"type": "message", "role": "user", "content": "My name is Alice."},
            {"type": "message", "role": "assistant", "content": "Hello Alice! Nice to meet you."},
            {"type": "message", "role": "user", "content": "What is my name?"},
        ],
    }

    _completed_with_output(_create(openai_service, body))


def test_previous_response_id(openai_service: RunningService, stub: UpstreamStub) -> None:
    first = _create(
        openai_service,
        {"model": "chat", "input": "Remember this code word: papaya. Reply with only OK."},
    )
    second = _create(
        openai_service,
        {
            "model": "chat",
            "previous_response_id": first.id,
            "input": "What code word did I ask you to remember?",
        },
    )

    _completed_with_output(first)
    _completed_with_output(second)
    assert second.previous_response_id == first.id
