"""The Vercel AI SDK's UI message stream (`useChat`, `DefaultChatTransport`): see docs/PROTOCOL.md.

Every event is `data:` only, one JSON chunk, no `id:` and no `event:`; the
stream ends with `data: [DONE]`. A complete answer:

    data: {"type":"start","messageId":"<answer id>"}
    data: {"type":"start-step"}
    data: {"type":"text-start","id":"text"}
    data: {"type":"text-delta","id":"text","delta":"Hello"}
    data: {"type":"text-end","id":"text"}
    data: {"type":"finish-step"}
    data: {"type":"finish","finishReason":"stop"}
    data: [DONE]

A failed one, after any text it had: `{"type":"error","errorText":"<code>: <message>"}`
then `[DONE]`, as the SDK's own createUIMessageStream ends when its writer
throws. The client raises the error text as an Error.

Only chunk types and fields that AI SDK 5, 6 and 7 clients all accept are used
(their `uiMessageChunkSchema`, read in ai 5.0.0, 5.0.92, 5.0.277, 6.0.326 and
7.0.173). ai 5 before 5.0.92 validates chunks with `z.strictObject` and its
`finish` has no `finishReason`, so it refuses our `finish`: AI SDK 5 clients
need 5.0.92 or later. From 5.0.92 to 7 the schemas take:
- `start`: messageId, messageMetadata; `start-step`, `finish-step`: nothing;
- `text-start`, `text-end`: id, providerMetadata (7 adds citations on text-end);
- `text-delta`: id, delta, providerMetadata; `error`: errorText;
- `finish`: finishReason, messageMetadata. Its enum differs: stop, length,
  content-filter, tool-calls, error, other in all; `unknown` only in 5;
  `interrupted` only in 7. We send only the shared six.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from sse_starlette import ServerSentEvent

from qa_service.core.errors import PublicError
from qa_service.core.events import AnswerEvent, Done, Failed, Meta, Text
from qa_service.wire.sse import LINE_SEPARATOR, encode_json

# The response header that tells the SDK which stream protocol this is.
STREAM_HEADER = "x-vercel-ai-ui-message-stream"
STREAM_VERSION = "v1"
DONE_MARKER = "[DONE]"
# An answer has one text part; its id only has to be stable within the message.
TEXT_PART_ID = "text"

# Providers' finish reasons (OpenAI's and Groq's words) onto the SDK's.
_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
}


def finish_reason(ours: str | None) -> str:
    """The SDK's word for a provider's finish reason; `other` for one it has none for."""
    return _FINISH_REASONS.get(ours or "", "other")


def error_text(error: PublicError) -> str:
    """`<code>: <message>`: our stable code first, so a client can branch on it."""
    return f"{error.code}: {error.message}"


def _chunk(payload: dict[str, Any] | str) -> ServerSentEvent:
    data = payload if isinstance(payload, str) else encode_json(payload)
    return ServerSentEvent(data, sep=LINE_SEPARATOR)


def render(event: AnswerEvent, text_started: bool) -> list[dict[str, Any]]:
    """The chunks for one domain event. `text_started`: a text part is open."""
    match event:
        case Meta(_, info):
            return [{"type": "start", "messageId": info.answer_id}, {"type": "start-step"}]
        case Text(_, text):
            delta = {"type": "text-delta", "id": TEXT_PART_ID, "delta": text}
            if text_started:
                return [delta]
            return [{"type": "text-start", "id": TEXT_PART_ID}, delta]
        case Done(_, summary):
            end = [{"type": "text-end", "id": TEXT_PART_ID}] if text_started else []
            return [
                *end,
                {"type": "finish-step"},
                {"type": "finish", "finishReason": finish_reason(summary.finish_reason)},
            ]
        case Failed(_, error):
            return [{"type": "error", "errorText": error_text(error)}]


async def render_stream(events: AsyncGenerator[AnswerEvent]) -> AsyncGenerator[ServerSentEvent]:
    """An answer's events as UI message chunks, then `[DONE]` once it has ended."""
    text_started = False
    async with aclosing(events):
        async for event in events:
            for chunk in render(event, text_started):
                yield _chunk(chunk)
            text_started = text_started or isinstance(event, Text)
    yield _chunk(DONE_MARKER)
