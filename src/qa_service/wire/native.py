"""The native SSE protocol: event ids and JSON payloads. See docs/PROTOCOL.md.

Every event is unnamed (SSE type `message`), so `EventSource.onmessage` sees all
of them; the payload's single top-level key says what it is: `meta`, `text`,
`done` or `error`. Exactly one `done` or `error` ends every stream.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sse_starlette import ServerSentEvent

from qa_service.core.errors import PublicError
from qa_service.core.events import AnswerMeta, AnswerSummary
from qa_service.wire.sse import LINE_SEPARATOR, encode_json


def event_id(answer_id: str, seq: int) -> str:
    """`<answer id>:<seq>`: the id resumption with Last-Event-ID will look up."""
    return f"{answer_id}:{seq}"


def meta(answer_id: str, seq: int, info: AnswerMeta) -> ServerSentEvent:
    body = {k: v for k, v in asdict(info).items() if v is not None}
    return _event(answer_id, seq, {"meta": body})


def text(answer_id: str, seq: int, chunk: str) -> ServerSentEvent:
    return _event(answer_id, seq, {"text": chunk})


def done(answer_id: str, seq: int, summary: AnswerSummary) -> ServerSentEvent:
    return _event(answer_id, seq, {"done": asdict(summary)})


def error(answer_id: str, seq: int, public: PublicError) -> ServerSentEvent:
    return _event(answer_id, seq, {"error": public.as_dict()})


def _event(answer_id: str, seq: int, payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(encode_json(payload), id=event_id(answer_id, seq), sep=LINE_SEPARATOR)
