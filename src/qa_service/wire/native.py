"""The native SSE protocol: event ids and JSON payloads. See docs/PROTOCOL.md.

Every event is unnamed (SSE type `message`), so `EventSource.onmessage` sees all
of them; the payload's single top-level key says what it is: `meta`, `text`,
`done` or `error`. Exactly one `done` or `error` ends every stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import asdict
from typing import Any

from sse_starlette import ServerSentEvent

from qa_service.core.events import NOT_LOGGED, AnswerEvent, Done, Failed, Meta, Text
from qa_service.wire.sse import LINE_SEPARATOR, encode_json

# Sent with the first event: a browser's EventSource reconnects this soon after
# a drop, well inside the resume grace period (QA_RESUME_GRACE_SECONDS).
RECONNECT_MS = 1000


def event_id(answer_id: str, seq: int) -> str:
    """`<answer id>:<seq>`: what Last-Event-ID sends back to resume."""
    return f"{answer_id}:{seq}"


def parse_event_id(value: str) -> tuple[str, int] | None:
    """The answer id and seq of a Last-Event-ID, or None if it is not one of ours."""
    answer_id, sep, seq = value.strip().rpartition(":")
    if not sep or not seq.isascii() or not seq.isdigit() or len(seq) > 9:
        return None
    return answer_id, int(seq)


def render(answer_id: str, event: AnswerEvent) -> ServerSentEvent:
    """One domain event as the native protocol's SSE event."""
    payload: dict[str, Any]
    retry = None
    match event:
        case Text(_, text):
            payload = {"text": text}
        case Meta(_, info):
            payload = {"meta": {k: v for k, v in asdict(info).items() if v is not None}}
            retry = RECONNECT_MS
        case Done(_, summary):
            done = asdict(summary)
            if summary.cache is None:
                del done["cache"]  # the cache is off: the payload it always had
            payload = {"done": done}
        case Failed(_, error):
            payload = {"error": error.as_dict()}
    logged = event.seq != NOT_LOGGED
    return ServerSentEvent(
        encode_json(payload),
        id=event_id(answer_id, event.seq) if logged else None,
        retry=retry,
        sep=LINE_SEPARATOR,
    )


async def render_stream(
    events: AsyncGenerator[AnswerEvent], answer_id: str | None = None
) -> AsyncGenerator[ServerSentEvent]:
    """An answer's events as they are sent. A new answer's id comes with its meta."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Meta):
                answer_id = event.info.answer_id
            yield render(answer_id or "", event)
