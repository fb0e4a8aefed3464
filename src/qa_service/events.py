"""The SSE wire protocol: event ids and JSON payloads. See docs/PROTOCOL.md.

Every event is unnamed (SSE type `message`), so `EventSource.onmessage` sees all
of them; the payload's single top-level key says what it is: `meta`, `text`,
`done` or `error`. Exactly one `done` or `error` ends every stream.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sse_starlette import ServerSentEvent

from qa_service.errors import PublicError

KEEPALIVE_COMMENT = "keep-alive"
# LF only: the spec allows it, every parser handles it, and it saves a byte a line.
LINE_SEPARATOR = "\n"


@dataclass(frozen=True, slots=True)
class AnswerMeta:
    request_id: str
    provider: str
    model: str
    prompt: str
    demo_fallback: bool = False
    notice: str | None = None
    scenario: str | None = None


@dataclass(frozen=True, slots=True)
class AnswerSummary:
    finish_reason: str | None
    usage: dict[str, int] | None
    ttft_ms: float | None
    chars: int
    duration_ms: float


def event_id(answer_id: str, seq: int) -> str:
    """`<answer id>:<seq>`: the id resumption with Last-Event-ID will look up."""
    return f"{answer_id}:{seq}"


def encode_json(payload: Any) -> str:
    """Compact JSON. Non-ASCII stays raw UTF-8 (a third of the bytes for CJK)."""
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (a model can emit one as a JSON escape) cannot be UTF-8.
        # \uXXXX escapes keep it, so JSON.parse still gives back the exact string.
        text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return text


def meta(answer_id: str, seq: int, info: AnswerMeta) -> ServerSentEvent:
    body = {k: v for k, v in asdict(info).items() if v is not None}
    return _event(answer_id, seq, {"meta": body})


def text(answer_id: str, seq: int, chunk: str) -> ServerSentEvent:
    return _event(answer_id, seq, {"text": chunk})


def done(answer_id: str, seq: int, summary: AnswerSummary) -> ServerSentEvent:
    return _event(answer_id, seq, {"done": asdict(summary)})


def error(answer_id: str, seq: int, public: PublicError) -> ServerSentEvent:
    return _event(answer_id, seq, {"error": public.as_dict()})


class KeepAlive(ServerSentEvent):
    """A lone comment line, with no blank line after it.

    Proxies see traffic; parsers ignore comments. The blank line that
    sse-starlette would add is left out on purpose: after any `id:` field,
    several SSE clients dispatch an empty event for a comment-only block
    (httpx-sse #35, r3labs/sse #163, openai-go #643), and `JSON.parse("")`
    then throws in the consumer. Without the blank line there is no block.
    """

    _ENCODED = f": {KEEPALIVE_COMMENT}{LINE_SEPARATOR}".encode()

    def encode(self) -> bytes:
        return self._ENCODED


def keepalive() -> ServerSentEvent:
    return KeepAlive()


def _event(answer_id: str, seq: int, payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(encode_json(payload), id=event_id(answer_id, seq), sep=LINE_SEPARATOR)
