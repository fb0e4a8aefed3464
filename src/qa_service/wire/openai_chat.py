"""The OpenAI chat completions dialect: an answer's events as `chat.completion.chunk`s.

The shapes are OpenAI's own (https://platform.openai.com/docs/api-reference/chat-streaming):
a first chunk with `delta.role`, then `delta.content` pieces, then one with
`finish_reason`, then, when `stream_options.include_usage` asks for it, a
chunk with empty `choices` and the `usage`; `data: [DONE]` ends the stream.
A failure after the stream has started is `data: {"error": {...}}`, which the
official SDKs raise as an APIError.

No `id:` lines and no named events. The official Python SDK's parser
dispatches an empty event for a comment after an `id:` line, then fails on
`json.loads("")` (openai/openai-python#2722); without ids, the keep-alive
comments (wire/sse.py) are ignored by every client. An OpenAI client cannot
resume a stream anyway.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from sse_starlette import ServerSentEvent

from qa_service.core.errors import PublicError
from qa_service.core.events import AnswerEvent, AnswerSummary, Done, Failed, Meta, Text
from qa_service.wire.sse import LINE_SEPARATOR, encode_json

DONE_SENTINEL = "[DONE]"


@dataclass(frozen=True, slots=True)
class Completion:
    """What every chunk of one completion repeats."""

    id: str
    created: int
    model: str
    include_usage: bool = False


def completion_id(answer_ref: str) -> str:
    """OpenAI's `chatcmpl-` form; the rest is the answer's ref, which its log line
    carries, for support. Never the answer id: that reads and cancels the answer
    with no key (/answers/{id}/events), and proxies and tools log completion ids."""
    return f"chatcmpl-{answer_ref}"


def usage_of(summary: AnswerSummary) -> dict[str, int] | None:
    """The provider's token counts under OpenAI's names; None when it gave none."""
    if summary.usage is None:
        return None
    return {
        "prompt_tokens": summary.usage["input_tokens"],
        "completion_tokens": summary.usage["output_tokens"],
        "total_tokens": summary.usage["total_tokens"],
    }


def error_object(public: PublicError) -> dict[str, Any]:
    """OpenAI's error shape, with our stable code as its `code`."""
    return {
        "message": public.message,
        "type": _error_type(public.status),
        "param": None,
        "code": public.code,
    }


def _error_type(status: int) -> str:
    # The types OpenAI itself uses; the SDKs pick their exception by status.
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status < 500:
        return "invalid_request_error"
    return "server_error"


def _chunk(completion: Completion, choices: list[dict[str, Any]]) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": None,
        "choices": choices,
    }
    if completion.include_usage:
        # As OpenAI does: with include_usage every chunk has the field, null
        # until the last.
        chunk["usage"] = None
    return chunk


def _delta(
    completion: Completion, delta: dict[str, str], finish_reason: str | None = None
) -> dict[str, Any]:
    return _chunk(
        completion,
        [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    )


def _data(payload: Any) -> ServerSentEvent:
    return ServerSentEvent(encode_json(payload), sep=LINE_SEPARATOR)


def render(completion: Completion, event: AnswerEvent) -> list[ServerSentEvent]:
    """One domain event as this dialect's SSE events (none, one, or the end)."""
    match event:
        case Meta():
            return [_data(_delta(completion, {"role": "assistant", "content": ""}))]
        case Text(_, text):
            return [_data(_delta(completion, {"content": text}))]
        case Done(_, summary):
            ending = [_data(_delta(completion, {}, summary.finish_reason or "stop"))]
            if completion.include_usage:
                ending.append(_data({**_chunk(completion, []), "usage": usage_of(summary)}))
            ending.append(ServerSentEvent(DONE_SENTINEL, sep=LINE_SEPARATOR))
            return ending
        case Failed(_, error):
            return [_data({"error": error_object(error)})]


async def render_stream(
    events: AsyncGenerator[AnswerEvent], completion: Completion
) -> AsyncGenerator[ServerSentEvent]:
    async with aclosing(events):
        async for event in events:
            for sse in render(completion, event):
                yield sse


def whole_completion(completion: Completion, text: str, summary: AnswerSummary) -> dict[str, Any]:
    """`stream: false`: the finished answer as one `chat.completion`."""
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": summary.finish_reason or "stop",
            }
        ],
        "usage": usage_of(summary),
    }
