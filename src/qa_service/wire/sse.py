"""SSE framing shared by every dialect: compact JSON and the keep-alive comment."""

from __future__ import annotations

import json
from typing import Any

from sse_starlette import ServerSentEvent

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
