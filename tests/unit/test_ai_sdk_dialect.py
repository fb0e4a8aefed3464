"""The AI SDK dialect's pure parts: rendering events as UI message chunks, reading
the useChat body into a question and history, and the in-process value store."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from pydantic import ValidationError

from qa_service.answers.chats import ChatAnswers
from qa_service.api.routes.ai_sdk import MIN_CHAT_ID_CHARS, ChatBody, ask_of
from qa_service.core.errors import UPSTREAM_INTERRUPTED, QAServiceError
from qa_service.core.events import AnswerEvent, AnswerMeta, AnswerSummary, Done, Failed, Meta, Text
from qa_service.stores.memory_values import MemoryValues
from qa_service.wire import ai_sdk

CHAT_ID = "chat-0123456789abcdef"
META = Meta(0, AnswerMeta("r", "openai", "m", "explain", answer_id="A" * 22))


def _done(reason: str | None) -> Done:
    return Done(9, AnswerSummary(reason, None, None, 0, 1.0))


async def _events(*events: AnswerEvent) -> AsyncGenerator[AnswerEvent]:
    for event in events:
        yield event


async def _chunks(*events: AnswerEvent) -> list[Any]:
    rendered = [e async for e in ai_sdk.render_stream(_events(*events))]
    raw = [e.encode().decode() for e in rendered]
    assert all(r.startswith("data: ") and r.endswith("\n\n") for r in raw)  # data only
    return [r[6:-2] if r[6:-2] == "[DONE]" else json.loads(r[6:-2]) for r in raw]


async def test_an_answer_is_one_text_part_in_one_step_then_done() -> None:
    chunks = await _chunks(META, Text(1, "Hi 🌱\r\n"), Text(2, '"x"'), _done("stop"))

    assert chunks == [
        {"type": "start", "messageId": "A" * 22},
        {"type": "start-step"},
        {"type": "text-start", "id": "text"},
        {"type": "text-delta", "id": "text", "delta": "Hi 🌱\r\n"},
        {"type": "text-delta", "id": "text", "delta": '"x"'},
        {"type": "text-end", "id": "text"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
        "[DONE]",
    ]


async def test_an_answer_without_text_opens_no_text_part() -> None:
    chunks = await _chunks(META, _done("stop"))

    assert [c if c == "[DONE]" else c["type"] for c in chunks] == [
        "start",
        "start-step",
        "finish-step",
        "finish",
        "[DONE]",
    ]


async def test_a_failure_is_an_error_chunk_with_code_and_message_then_done() -> None:
    chunks = await _chunks(META, Text(1, "half"), Failed(2, UPSTREAM_INTERRUPTED))

    assert chunks[-2:] == [
        {"type": "error", "errorText": f"upstream_interrupted: {UPSTREAM_INTERRUPTED.message}"},
        "[DONE]",
    ]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content-filter"),
        ("tool_calls", "tool-calls"),
        ("function_call", "tool-calls"),
        ("something_new", "other"),
        (None, "other"),
    ],
)
def test_finish_reasons_are_the_ones_every_sdk_major_accepts(ours: str | None, theirs: str) -> None:
    assert ai_sdk.finish_reason(ours) == theirs
    # The values ai 5 (from 5.0.92), 6 and 7 all accept.
    assert theirs in {"stop", "length", "content-filter", "tool-calls", "error", "other"}


def _body(*messages: dict[str, Any], **extra: Any) -> ChatBody:
    return ChatBody.model_validate({"id": CHAT_ID, "messages": list(messages), **extra})


def _text(role: str, *texts: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "text": t} for t in texts]}


def test_the_last_user_message_is_the_question_and_the_rest_the_history() -> None:
    ask = ask_of(
        _body(
            _text("user", "q1"),
            {
                "role": "assistant",
                "parts": [{"type": "step-start"}, *_text("x", "a", "b")["parts"]],
            },
            _text("user", "part one", "part two"),
            prompt="eli5",
        ),
        max_history_messages=50,
    )

    assert ask.query == "part one\npart two"
    assert ask.prompt == "eli5"
    assert [(m.role, m.content) for m in ask.history or ()] == [
        ("user", "q1"),
        ("assistant", "a\nb"),
    ]


@pytest.mark.parametrize(
    "messages",
    [
        [_text("user", "q"), _text("assistant", "a")],
        [_text("system", "s"), _text("user", "q")],
        [{"role": "user", "parts": [{"type": "file", "url": "data:,"}, *_text("u", "q")["parts"]]}],
        [{"role": "user", "parts": [{"type": "dynamic-tool"}]}],
        [{"role": "user", "parts": [{"type": "text"}]}],
    ],
    ids=["assistant-last", "system", "file", "tool", "text-without-text"],
)
def test_what_cannot_be_answered_is_refused(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(QAServiceError) as refused:
        ask_of(_body(*messages), max_history_messages=50)
    assert refused.value.public.code == "invalid_request"


def test_empty_earlier_messages_count_against_the_history_limit() -> None:
    empty = {"role": "assistant", "parts": []}
    ask = ask_of(_body(*[empty] * 3, _text("user", "q")), max_history_messages=3)
    assert ask.history == []

    with pytest.raises(QAServiceError) as refused:
        ask_of(_body(*[empty] * 4, _text("user", "q")), max_history_messages=3)
    assert refused.value.public.code == "history_too_long"


async def test_a_chat_is_found_only_by_the_client_and_browser_that_started_it() -> None:
    chats = ChatAnswers(MemoryValues(), 60)
    await chats.remember("key:a", "browser-1", "chat", "answer-1")
    await chats.remember("key:a", "browser-1", "chat", "answer-2")

    assert await chats.latest("key:a", "browser-1", "chat") == "answer-2"
    assert await chats.latest("key:b", "browser-1", "chat") is None
    assert await chats.latest("key:a", "browser-2", "chat") is None
    assert await chats.latest("key:a", "browser-1", "other") is None


@pytest.mark.parametrize("chat_id", ["", "c", "x" * (MIN_CHAT_ID_CHARS - 1)])
def test_a_chat_id_too_short_to_be_unguessable_is_refused(chat_id: str) -> None:
    with pytest.raises(ValidationError):
        ChatBody.model_validate({"id": chat_id, "messages": [_text("user", "q")]})


async def test_a_value_put_again_lives_its_full_ttl_and_expired_ones_are_swept() -> None:
    now = [0.0]
    values = MemoryValues(lambda: now[0])
    await values.put("again", "1", 60)
    await values.put("old", "1", 60)
    now[0] = 30
    await values.put("again", "2", 60)  # moves to the end: the sweep order stays right
    now[0] = 61

    await values.put("new", "3", 60)

    assert await values.get("again") == "2"
    assert await values.get("old") is None
    assert len(values) == 2
