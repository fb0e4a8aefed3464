"""The last sequence number an ended Responses answer has (wire/openai_responses.py):
a resume after a larger one is refused. test_responses_wire.py covers the rest."""

from __future__ import annotations

from qa_service.core.errors import CANCELLED
from qa_service.core.events import AnswerSummary, Done, Failed, Meta, Text
from qa_service.wire.openai_responses import (
    ResponseFacts,
    ResponseState,
    last_number,
    render,
)

SUMMARY = AnswerSummary("stop", None, 1.0, 6, 1.0)
# meta 0, texts 1..3, done 4: numbers 0..3 opening, 4..6 deltas, 7..10 ending.
LOG = [Meta(0, {}), Text(1, "ab"), Text(2, "cd"), Text(3, "ef"), Done(4, SUMMARY)]


def _numbers(log: list[object]) -> list[int]:
    state = ResponseState(ResponseFacts(id="resp_1", item_id="msg_1", created_at=1, model="chat"))
    return [number for event in log for number, _ in render(state, event)]  # type: ignore[arg-type]


def test_the_last_number_is_the_one_the_ending_renders_last() -> None:
    assert last_number(LOG[-1]) == _numbers(LOG)[-1] == 10
    failed = [*LOG[:-1], Failed(4, CANCELLED)]
    assert last_number(failed[-1]) == _numbers(failed)[-1] == 7
