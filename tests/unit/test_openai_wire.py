"""The OpenAI dialect's renderer: domain events as chat.completion.chunk data lines."""

from __future__ import annotations

import json
from typing import Any

from qa_service.core.errors import UPSTREAM_INTERRUPTED
from qa_service.core.events import (
    NOT_LOGGED,
    AnswerEvent,
    AnswerMeta,
    AnswerSummary,
    Done,
    Failed,
    Meta,
    Text,
)
from qa_service.wire.openai_chat import Completion, render

COMPLETION = Completion(id="chatcmpl-x", created=1, model="chat")
SUMMARY = AnswerSummary(
    finish_reason="length",
    usage={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
    ttft_ms=1.0,
    chars=2,
    duration_ms=2.0,
)


def _wire(completion: Completion, event: AnswerEvent) -> list[str]:
    return [sse.encode().decode() for sse in render(completion, event)]


def _data(line: str) -> Any:
    # One data line per event: no id, no event name.
    assert line.startswith("data: ")
    assert line.endswith("\n\n")
    assert line.count("\n") == 2
    payload = line.removeprefix("data: ").removesuffix("\n\n")
    return payload if payload == "[DONE]" else json.loads(payload)


def test_meta_is_the_role_chunk_and_text_a_content_chunk() -> None:
    (role,) = _wire(COMPLETION, Meta(0, AnswerMeta("r", "openai", "m", "chat")))
    (text,) = _wire(COMPLETION, Text(1, "a\nb"))

    assert _data(role)["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert _data(text)["choices"][0]["delta"] == {"content": "a\nb"}
    assert "usage" not in _data(text)


def test_done_is_the_finish_then_usage_when_asked_then_done_sentinel() -> None:
    with_usage = Completion(id="chatcmpl-x", created=1, model="chat", include_usage=True)

    plain = [_data(line) for line in _wire(COMPLETION, Done(5, SUMMARY))]
    usage = [_data(line) for line in _wire(with_usage, Done(5, SUMMARY))]

    assert plain[0]["choices"][0]["finish_reason"] == "length"
    assert plain[1:] == ["[DONE]"]
    assert usage[0]["usage"] is None
    assert usage[1]["choices"] == []
    assert usage[1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert usage[2:] == ["[DONE]"]


def test_a_failure_is_one_error_event_in_openais_shape_with_no_done_sentinel() -> None:
    lines = _wire(COMPLETION, Failed(NOT_LOGGED, UPSTREAM_INTERRUPTED))

    assert [_data(line) for line in lines] == [
        {
            "error": {
                "message": UPSTREAM_INTERRUPTED.message,
                "type": "server_error",
                "param": None,
                "code": "upstream_interrupted",
            }
        }
    ]
