"""Log lines: JSON, scrubbed of secrets, never a traceback, from any thread."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from qa_service.answers.model import AnswerRecord, answer_ref
from qa_service.observability.logs import configure_logging
from qa_service.observability.telemetry import Telemetry

SECRET = "sk-test-abcdefghijklmnop"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, threading.excepthook
    yield
    root.handlers[:], threading.excepthook = handlers, hook
    root.setLevel(level)


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_lines_are_json_with_extra_fields_and_no_secret(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("info", [SECRET])
    logging.getLogger("some.sdk").warning("request failed: key %s rejected", SECRET)
    logging.getLogger("qa_service.answers").info("answer", extra={"outcome": "complete"})

    first, second = _lines(capsys.readouterr().err)
    assert first["message"] == "request failed: key [REDACTED] rejected"
    assert first["level"] == "WARNING"
    assert second["outcome"] == "complete"


# The answer line as operators and the integration tests read it: every field
# of the record, under the record's own names.
ANSWER_LINE: dict[str, Any] = {
    "request_id": "rid",
    "answer_ref": "0123456789ab",
    "provider": "openai",
    "model": "gpt-x",
    "answered_provider": "groq",
    "answered_model": "llama-x",
    "fallback": True,
    "prompt": "explain",
    "prompt_version": "8279f918e73a",
    "cache": None,
    "outcome": "error",
    "error_code": "upstream_error",
    "error_cause": "APIError",
    "upstream_status": 502,
    "finish_reason": None,
    "pieces": 3,
    "chars": 12,
    "ttft_ms": 41.5,
    "duration_ms": 99.0,
    "input_tokens": 7,
    "output_tokens": None,
}


def test_each_answer_logs_one_line_with_every_field_of_its_record(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("info", [])

    Telemetry("openai", "gpt-x").answer_finished(AnswerRecord(**ANSWER_LINE))

    [line] = _lines(capsys.readouterr().err)
    assert {key: line.pop(key) for key in ("level", "name", "message")} == {
        "level": "WARNING",  # an answer that ended in an error
        "name": "qa_service.answers",
        "message": "answer",
    }
    del line["asctime"]
    assert line == ANSWER_LINE


def test_tracebacks_are_withheld(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    configure_logging("info", [SECRET])
    try:
        raise ValueError(f"body echoed {SECRET}")
    except ValueError:
        logging.getLogger("x").exception("failed")

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert SECRET not in err
    assert "ValueError (traceback withheld)" in err


def test_a_background_thread_crash_is_logged_without_traceback(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("info", [SECRET])

    def crash() -> None:
        raise KeyError(SECRET)

    thread = threading.Thread(target=crash, name="sdk-worker")
    thread.start()
    thread.join(5)
    assert not thread.is_alive()

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert SECRET not in err
    [line] = _lines(err)
    assert line["message"] == "uncaught exception in thread sdk-worker"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("masked: sk-test-****mnop", "masked: [REDACTED]****mnop"),
        ("tail: ...ghijklmnop!", "tail: ...[REDACTED]!"),
        (f"twice {SECRET} and {SECRET}", "twice [REDACTED] and [REDACTED]"),
        ("glued sk-test-abcdefghXXijklmnop", "glued [REDACTED]XX[REDACTED]"),
        ("seven only: sk-test", "seven only: sk-test"),
    ],
)
def test_a_recognisable_run_of_a_secret_is_scrubbed_too(
    capsys: pytest.CaptureFixture[str], restore_logging: None, message: str, expected: str
) -> None:
    configure_logging("info", [SECRET])
    logging.getLogger("some.sdk").warning(message)

    (line,) = _lines(capsys.readouterr().err)
    assert line["message"] == expected


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_answer_id_in_a_logged_path_becomes_its_reference(
    capsys: pytest.CaptureFixture[str], restore_logging: None, log_format: Literal["json", "text"]
) -> None:
    """An id reads and cancels its answer with no key: a path that carries one is
    logged with the id's reference in its place."""
    answer_id = "Zx9_-" + "q" * 17
    configure_logging("info", [], log_format)
    logging.getLogger("qa_service.api").error("path=/answers/%s/events", answer_id)
    logging.getLogger("uvicorn.access").info('"POST /answers/%s/cancel HTTP/1.1" 200', answer_id)

    err = capsys.readouterr().err
    assert answer_id not in err
    assert err.count(f"/answers/ref:{answer_ref(answer_id)}/") == 2


def test_libraries_stay_at_warning_when_the_service_logs_at_debug(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("debug", [])
    logging.getLogger("groq._base_client").debug("Request options: the question")
    logging.getLogger("some.new.library").info("the answer")
    logging.getLogger("some.new.library").warning("a real problem")
    logging.getLogger("qa_service.generation.upstream").debug("ours")

    messages = [line["message"] for line in _lines(capsys.readouterr().err)]
    assert messages == ["a real problem", "ours"]


def test_a_send_timeout_is_recognised_alone_or_inside_an_exception_group() -> None:
    from sse_starlette.sse import SendTimeoutError

    from qa_service.observability.logs import is_send_timeout

    assert is_send_timeout(SendTimeoutError())
    assert is_send_timeout(ExceptionGroup("task group", [SendTimeoutError(), OSError()]))
    assert not is_send_timeout(ExceptionGroup("task group", [OSError()]))
    assert not is_send_timeout(RuntimeError("a bug"))
    assert not is_send_timeout(None)
