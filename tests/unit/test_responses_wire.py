"""The Responses dialect's renderer: numbers that follow the log, and resumes that
neither repeat nor lose a piece, whatever the coalescing merged."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import openresponses_types as ort
import pytest

from qa_service.answers.coalescing import merge_texts
from qa_service.core.errors import CANCELLED, UPSTREAM_INTERRUPTED
from qa_service.core.events import AnswerEvent, AnswerMeta, AnswerSummary, Done, Failed, Meta, Text
from qa_service.wire.openai_responses import (
    ResponseFacts,
    ResponseState,
    log_position,
    render,
    render_stream,
)

FACTS = ResponseFacts(id="resp_" + "a" * 48, item_id="msg_" + "b" * 48, created_at=10, model="chat")
META = Meta(0, AnswerMeta(request_id="r", provider="openai", model="m", prompt="chat"))
SUMMARY = AnswerSummary(
    finish_reason="stop",
    usage={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
    ttft_ms=1.0,
    chars=6,
    duration_ms=2400.0,
)
PIECES = ["Hé", "llo ", "🌱", " wo", "rld"]
LOG: list[AnswerEvent] = [META, *(Text(i + 1, t) for i, t in enumerate(PIECES)), Done(6, SUMMARY)]


def _stream(events: list[AnswerEvent], after: int = -1) -> list[dict[str, Any]]:
    state = ResponseState(FACTS)
    return [
        {**data, "sequence_number": number}
        for event in events
        for number, data in render(state, event)
        if number > after
    ]


def _text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def test_a_whole_answer_is_numbered_from_0_with_no_gap() -> None:
    events = _stream(LOG)

    assert [e["sequence_number"] for e in events] == list(range(13))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "".join(PIECES)
    assert events[-1]["response"]["completed_at"] == 12  # created_at + the answer's 2.4 s
    ort.ResponseResource.model_validate(events[-1]["response"])


@pytest.mark.parametrize("after", range(-1, 13))
def test_a_resume_after_any_number_sends_exactly_the_rest(after: int) -> None:
    whole = _stream(LOG)
    position = log_position(after, final_seq=6)
    # What a resuming route does: the text up to the position, then the log after it.
    state = ResponseState(FACTS)
    for event in LOG[: position + 1]:
        state.take(event)
    rest = [
        {**data, "sequence_number": number}
        for event in LOG[position + 1 :]
        for number, data in render(state, event)
        if number > after
    ]

    assert rest == [e for e in whole if e["sequence_number"] > after]


async def _replayed(events: list[AnswerEvent]) -> AsyncGenerator[AnswerEvent]:
    for event in events:
        yield event


async def test_a_resume_after_a_merged_run_never_repeats_its_text() -> None:
    # Coalescing sent texts 1-3 as one delta numbered 6 (the last's seq, 3, + 3).
    merged = [e async for e in merge_texts(_replayed(LOG), window_seconds=60)]
    first = _stream(merged)
    seen = next(e for e in first if e["type"] == "response.output_text.delta")
    assert seen["sequence_number"] == 5 + 3  # every text merged: the last's seq, 5

    after = 6  # a client that saw the first three texts as one delta
    state = ResponseState(FACTS)
    position = log_position(after, final_seq=6)
    for event in LOG[: position + 1]:
        state.take(event)
    resumed = [
        json.loads(sse.data)
        async for sse in render_stream(
            merge_texts(_replayed(LOG[position + 1 :]), 60), state, after
        )
    ]

    assert position == 3
    assert _text_of(resumed) == "".join(PIECES[3:])
    assert resumed[-1]["response"]["output"][0]["content"][0]["text"] == "".join(PIECES)


def test_the_cap_makes_it_incomplete_and_a_failure_failed_with_the_text_so_far() -> None:
    cut = _stream([META, Text(1, "a"), Done(2, AnswerSummary("length", None, 1.0, 1, 1.0))])
    failed = _stream([META, Text(1, "a"), Failed(2, UPSTREAM_INTERRUPTED)])
    cancelled = _stream([META, Failed(1, CANCELLED)])

    assert cut[-1]["type"] == "response.incomplete"
    assert cut[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut[-2]["item"]["status"] == "incomplete"
    assert [e["type"] for e in failed[-2:]] == ["response.output_text.delta", "response.failed"]
    assert failed[-1]["sequence_number"] == 5
    assert failed[-1]["response"]["error"] == {
        "code": "upstream_interrupted",
        "message": UPSTREAM_INTERRUPTED.message,
    }
    assert failed[-1]["response"]["output"][0]["content"][0]["text"] == "a"
    assert cancelled[-1]["response"]["status"] == "cancelled"
    for event in (cut[-1], failed[-1], cancelled[-1]):
        ort.ResponseResource.model_validate(event["response"])
