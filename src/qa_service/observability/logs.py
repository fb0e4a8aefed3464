"""Log set-up: JSON lines (or text) on stderr, request ids attached, secrets and answer ids
scrubbed."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, Literal

from asgi_correlation_id import correlation_id
from pythonjsonlogger.json import JsonFormatter
from sse_starlette.sse import SendTimeoutError

from qa_service.answers.model import answer_ref

REDACTED = "[REDACTED]"
JSON_FIELDS = ("asctime", "levelname", "name", "message")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


# An answer's id in a path (/answers/{id}/events, /answers/{id}/cancel).
_ANSWER_PATH = re.compile(r"/answers/([A-Za-z0-9_-]{22})(?![A-Za-z0-9_-])")

# A run this long from a secret is enough to recognise it: a masked key
# ("sk-proj-****wxyz") or a truncated one in an SDK message gives away no less.
SECRET_RUN = 8


class _Redacting(logging.Formatter):
    """Scrubs secrets, and any run of SECRET_RUN characters from one; withholds tracebacks.

    Tracebacks carry exception text, and provider exception text can carry the
    request and its key. The service never logs exception text on purpose;
    this is the net under that rule, for third-party loggers that might.
    """

    _short: list[str]
    _runs: frozenset[str]

    def _set_secrets(self, secrets: Iterable[str]) -> None:
        secrets = {s for s in secrets if len(s) >= 4}
        self._short = sorted((s for s in secrets if len(s) < SECRET_RUN), key=len, reverse=True)
        self._runs = frozenset(
            secret[start : start + SECRET_RUN]
            for secret in secrets
            if len(secret) >= SECRET_RUN
            for start in range(len(secret) - SECRET_RUN + 1)
        )

    def formatException(self, ei: Any) -> str:
        exc_type = ei[0].__name__ if ei and ei[0] is not None else "Exception"
        return f"{exc_type} (traceback withheld)"

    def formatStack(self, stack_info: str) -> str:
        return "(stack withheld)"

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))

    def redact(self, text: str) -> str:
        text = refer_to_answers(text)
        for secret in self._short:
            text = text.replace(secret, REDACTED)
        return _scrub_runs(text, self._runs) if self._runs else text


def redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    """The logs' redaction as a function of a text, for what goes elsewhere than a
    log line (a span's captured messages: observability/tracing.py)."""
    scrubber = _Redacting()
    scrubber._set_secrets(secrets)
    return scrubber.redact


def refer_to_answers(line: str) -> str:
    """Each answer id in a path as its reference (answers/model.py answer_ref says
    why): the net under the rule that no line names an id, for the lines that log
    a path (an unhandled error's; uvicorn's access log, were it turned on)."""
    if "/answers/" not in line:
        return line
    return _ANSWER_PATH.sub(lambda m: f"/answers/ref:{answer_ref(m[1])}", line)


def _scrub_runs(line: str, runs: frozenset[str]) -> str:
    """Replace every stretch of `line` covered by runs from a secret with one REDACTED."""
    # A set lookup per position: a few microseconds a line, where a regex of
    # every run would try each of them at each position.
    pieces: list[str] = []
    kept_from = 0
    covered_to = -1
    for start in range(len(line) - SECRET_RUN + 1):
        if line[start : start + SECRET_RUN] in runs:
            if start > covered_to:
                pieces += [line[kept_from:start], REDACTED]
            covered_to = start + SECRET_RUN
            kept_from = covered_to
    if not pieces:
        return line
    pieces.append(line[kept_from:])
    return "".join(pieces)


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


# Loggers whose DEBUG and INFO lines are ours to vouch for. Every other
# library is held at WARNING whatever QA_LOG_LEVEL says: at DEBUG the SDKs log
# whole requests (the question), httpcore logs headers, and sse-starlette
# logs each chunk it sends (the answer).
OWN_LOGGERS = ("qa_service", "uvicorn")
QUIET_LIBRARIES = (
    "openai",
    "groq",
    "httpx",
    "httpx2",
    "httpcore",
    "hpack",
    "langchain",
    "langchain_core",
    "langchain_openai",
    "langchain_groq",
    "langsmith",
    "sse_starlette",
    "asyncio",
    "urllib3",
    "multipart",
    "python_multipart",
)


class _LibraryFloor(logging.Filter):
    """Drops third-party lines below WARNING: the net under QUIET_LIBRARIES' levels."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.startswith(OWN_LOGGERS)


class _ExpectedDisconnects(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" for a client that stopped reading.

    sse-starlette raises SendTimeoutError on purpose; the app logs it once, as
    the warning it is (app.py), and server.py resets the connection. uvicorn's
    copy would say ERROR for what is no fault of the service.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        return not (
            record.name == "uvicorn.error" and exc_info is not None and is_send_timeout(exc_info[1])
        )


def is_send_timeout(exc: BaseException | None) -> bool:
    """A client that stopped reading: sse-starlette's SendTimeoutError, alone or
    inside the exception group of the task group it was raised in (which one
    arrives depends on timing: tests/integration/test_connections.py saw both)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(SendTimeoutError) is not None
    return isinstance(exc, SendTimeoutError)


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
    handler.addFilter(_LibraryFloor())
    handler.addFilter(_ExpectedDisconnects())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Levels, so these libraries do not even build the records the floor drops.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    threading.excepthook = _log_thread_exception
