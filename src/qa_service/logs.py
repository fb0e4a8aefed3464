"""Log set-up: one handler on stderr, with every known secret redacted from every line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then removes secrets from the whole line, tracebacks included.

    The service never logs exception text on purpose; this is the net under
    that rule, for third-party loggers that might.
    """

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        # Longest first, so a secret containing another is removed whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def formatException(self, ei: Any) -> str:
        # Tracebacks carry exception text, and provider exception text can
        # carry the request and its key. The type is enough to find the line.
        exc_type = ei[0].__name__ if ei and ei[0] is not None else "Exception"
        return f"exception={exc_type} (traceback withheld)"

    def formatStack(self, stack_info: str) -> str:
        return "(stack withheld)"

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        return line


def configure_logging(level: str, secrets: Iterable[str]) -> None:
    """Route the service's, uvicorn's and the SDKs' logs through one redacting handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # httpx logs every request URL at INFO; that is noise per answer, not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
