from __future__ import annotations

import json
import re

import pytest
from httpx_sse._decoders import SSEDecoder

from qa_service.core.errors import UPSTREAM_RATE_LIMITED, PublicError
from qa_service.core.events import (
    NOT_LOGGED,
    AnswerEvent,
    AnswerMeta,
    AnswerSummary,
    Done,
    Failed,
    Meta,
    Text,
    from_dict,
    to_dict,
)
from qa_service.wire import native, sse


def _decode(raw: bytes) -> list[tuple[str, str]]:
    """(id, data) of each event, with a real SSE decoder."""
    decoder = SSEDecoder()
    out = []
    # SSE lines end at CR, LF or CRLF only; str.splitlines() would also cut at U+2028.
    for line in re.split(r"\r\n|\r|\n", raw.decode())[:-1]:
        sse = decoder.decode(line)
        if sse is not None:
            out.append((sse.id, sse.data))
    return out


@pytest.mark.parametrize(
    "chunk",
    [
        "plain",
        "line\nbreak",
        "cr\ronly",
        "crlf\r\n",
        "\n\n",
        "data: fake\n\nid: 9",
        'quote " and \\ backslash',
        "<b>&amp;</b>",
        "光合作用 🌱 👩🏽‍🔬",
        "\u2028\u2029",
        "\x00\x1f",
        "",
    ],
)
def test_text_event_round_trips_exactly(chunk: str) -> None:
    raw = native.render("abc", Text(3, chunk)).encode()
    assert raw.count(b"\n\n") == 1
    assert raw.endswith(b"\n\n")
    [(event_id, data)] = _decode(raw)
    assert event_id == "abc:3"
    assert json.loads(data) == {"text": chunk}


def test_lone_surrogate_survives_as_a_json_escape() -> None:
    raw = native.render("a", Text(1, "half \ud83d emoji")).encode()
    raw.decode("utf-8")  # valid UTF-8 on the wire
    [(_, data)] = _decode(raw)
    assert json.loads(data) == {"text": "half \ud83d emoji"}


def test_non_ascii_is_sent_raw_not_escaped() -> None:
    assert "光".encode() in native.render("a", Text(1, "光")).encode()


def test_meta_omits_unset_fields() -> None:
    meta = AnswerMeta(
        request_id="r", provider="openai", model="m", prompt="explain", answer_id="A" * 22
    )
    [(_, data)] = _decode(native.render("r", Meta(0, meta)).encode())
    assert json.loads(data) == {
        "meta": {
            "request_id": "r",
            "answer_id": "A" * 22,
            "provider": "openai",
            "model": "m",
            "prompt": "explain",
            "demo_fallback": False,
        }
    }


def test_done_carries_the_summary() -> None:
    summary = AnswerSummary("stop", {"input_tokens": 1}, 12.5, 40, 99.0, "groq", "llama")
    [(_, data)] = _decode(native.render("r", Done(7, summary)).encode())
    assert json.loads(data) == {
        "done": {
            "finish_reason": "stop",
            "usage": {"input_tokens": 1},
            "ttft_ms": 12.5,
            "chars": 40,
            "duration_ms": 99.0,
            "provider": "groq",
            "model": "llama",
        }
    }


def test_error_carries_code_message_retryable_and_retry_after() -> None:
    limited = PublicError(UPSTREAM_RATE_LIMITED.code, UPSTREAM_RATE_LIMITED.message, True, 503, 7.0)
    [(_, data)] = _decode(native.render("r", Failed(2, limited)).encode())
    assert json.loads(data) == {
        "error": {
            "code": "upstream_rate_limited",
            "message": UPSTREAM_RATE_LIMITED.message,
            "retryable": True,
            "retry_after_seconds": 7.0,
        }
    }


def test_keepalive_is_a_lone_comment_line_that_dispatches_nothing() -> None:
    raw = native.render("r", Text(1, "x")).encode() + sse.keepalive().encode()
    raw += native.render("r", Text(2, "y")).encode()
    assert sse.keepalive().encode() == b": keep-alive\n"
    assert [json.loads(data) for _, data in _decode(raw)] == [{"text": "x"}, {"text": "y"}]


@pytest.mark.parametrize(
    "event",
    [
        Meta(0, AnswerMeta("r", "groq", "m", "explain", "A" * 22, True, "n", "unicode")),
        Text(1, "half \ud83d emoji, 光, \r\n"),
        Done(2, AnswerSummary("length", {"input_tokens": 1, "output_tokens": 2}, 1.5, 9, 3.0)),
        Failed(3, UPSTREAM_RATE_LIMITED),
        Failed(-1, PublicError("x", "y", True, 503, 2.5)),
    ],
)
def test_a_stored_event_comes_back_equal(event: AnswerEvent) -> None:
    """What the Redis store does: to_dict, JSON (ASCII-escaped), from_dict."""
    stored = json.dumps(to_dict(event), separators=(",", ":"))
    assert from_dict(json.loads(stored)) == event


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("AbC_-0123456789abcdefg:0", ("AbC_-0123456789abcdefg", 0)),
        (" x:17 ", ("x", 17)),
        ("x:", None),
        ("x", None),
        ("x:-1", None),
        ("x:1e3", None),
        ("x:\u0661", None),  # a non-ASCII digit
        ("x:1234567890", None),
    ],
)
def test_last_event_id_parsing(value: str, parsed: tuple[str, int] | None) -> None:
    assert native.parse_event_id(value) == parsed


def test_an_event_for_one_connection_only_carries_no_id() -> None:
    raw = native.render("r", Failed(NOT_LOGGED, UPSTREAM_RATE_LIMITED)).encode()
    assert not raw.startswith(b"id:")
    assert b"\nid:" not in raw
