"""SSE framing shared by every dialect: the response, compact JSON, the keep-alive comment."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from qa_service.config import Settings

KEEPALIVE_COMMENT = "keep-alive"
# LF only: the spec allows it, every parser handles it, and it saves a byte a line.
LINE_SEPARATOR = "\n"


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


def event_stream_response(
    events: AsyncIterable[ServerSentEvent], settings: Settings, shutdown: anyio.Event
) -> EventSourceResponse:
    """The response that sends `events`, with keep-alives and a send timeout.

    Shutdown timeline (SIGTERM): sse-starlette notices within 0.5 s and sets
    `shutdown`; answers get QA_SHUTDOWN_GRACE_SECONDS to finish, then end with
    a shutting_down event; sse-starlette and uvicorn wait a little longer so
    that event is delivered before they force anything.
    """
    return EventSourceResponse(
        events,
        shutdown_event=shutdown,
        shutdown_grace_period=settings.shutdown_grace_seconds + 1,
        # sse-starlette defaults to no-store; no-cache is what proxies and
        # browsers are documented to honour for event streams.
        headers={"Cache-Control": "no-cache"},
        ping=settings.keepalive_seconds,
        ping_message_factory=keepalive,
        sep=LINE_SEPARATOR,
        send_timeout=settings.send_timeout_seconds,
    )


async def no_events() -> AsyncGenerator[ServerSentEvent]:
    """The body of a HEAD response: sse-starlette sends only the headers."""
    return
    yield  # makes this an async generator that yields nothing
