"""Log set-up: JSON lines (or text) on stderr, request ids attached, secrets scrubbed."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any, Literal

from asgi_correlation_id import correlation_id
from pythonjsonlogger.json import JsonFormatter

REDACTED = "[REDACTED]"
JSON_FIELDS = ("asctime", "levelname", "name", "message")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _Redacting(logging.Formatter):
    """Scrubs secrets from the finished line, and withholds tracebacks.

    Tracebacks carry exception text, and provider exception text can carry the
    request and its key. The service never logs exception text on purpose;
    this is the net under that rule, for third-party loggers that might.
    """

    _secrets: list[str]

    def _set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is removed whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def formatException(self, ei: Any) -> str:
        exc_type = ei[0].__name__ if ei and ei[0] is not None else "Exception"
        return f"{exc_type} (traceback withheld)"

    def formatStack(self, stack_info: str) -> str:
        return "(stack withheld)"

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        return line


class RedactingJsonFormatter(_Redacting, JsonFormatter):
    """One JSON object a line; `extra=` fields become keys."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(list(JSON_FIELDS), rename_fields={"levelname": "level"})
        self._set_secrets(secrets)


class RedactingTextFormatter(_Redacting):
    """For people at a terminal; `extra=` fields follow as key=value."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(TEXT_FORMAT)
        self._set_secrets(secrets)

    def formatMessage(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRIBUTES and value is not None
        )
        line = super().formatMessage(record)
        return f"{line} {extras}" if extras else line


class _RequestIdFilter(logging.Filter):
    """Tags every line logged while serving a request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = correlation_id.get()
            if request_id:
                record.request_id = request_id
        # uvicorn's copy of the message with terminal colour codes.
        record.__dict__.pop("color_message", None)
        return True


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    # The default hook prints a raw traceback to stderr, past every formatter;
    # SDK background threads (LangSmith's tracer, for one) can raise there.
    logging.getLogger("qa_service.threads").error(
        "uncaught exception in thread %s",
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )


_STANDARD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def configure_logging(
    level: str, secrets: Iterable[str], log_format: Literal["json", "text"] = "json"
) -> None:
    """Route the service's, uvicorn's and the SDKs' logs through one scrubbing handler."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = (
        RedactingJsonFormatter(secrets) if log_format == "json" else RedactingTextFormatter(secrets)
    )
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # httpx logs every request URL at INFO; that is noise per answer, not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    threading.excepthook = _log_thread_exception
