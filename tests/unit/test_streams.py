"""The answer lifecycle with fake models: events, numbering, replay, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from qa_service.answers.streams import Answer, AnswerRequest, answer_events
from qa_service.core.events import AnswerMeta
from qa_service.generation.demo import SCENARIO_CONFIG_KEY, build_demo_model
from qa_service.generation.prompts import load_prompts
from qa_service.generation.writer import AIWriter

PROMPTS = load_prompts(Path(__file__).resolve().parents[2] / "prompts")


def _answer(model: Any, configurable: dict[str, str] | None = None) -> Answer:
    meta = AnswerMeta(request_id="rid", provider="demo", model="m", prompt="explain")
    request = AnswerRequest("question", "explain", configurable or {})
    return Answer(meta, AIWriter(model, PROMPTS), request, upstream_close_timeout=1.0)


async def _events(answer: Answer) -> list[tuple[str, dict[str, Any]]]:
    return [(e.id or "", json.loads(str(e.data))) async for e in answer_events(answer)]


async def test_complete_answer_is_meta_texts_then_done_with_sequential_ids() -> None:
    events = await _events(_answer(build_demo_model(0, 0)))

    kinds = [next(iter(payload)) for _, payload in events]
    assert kinds[0] == "meta"
    assert kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"text"}
    assert [event_id for event_id, _ in events] == [f"rid:{n}" for n in range(len(events))]
    done = events[-1][1]["done"]
    assert done["chars"] == sum(len(p["text"]) for _, p in events if "text" in p)
    assert done["ttft_ms"] <= done["duration_ms"]


async def test_failure_mid_answer_is_one_error_event_after_the_text() -> None:
    events = await _events(
        _answer(build_demo_model(0, 0), {SCENARIO_CONFIG_KEY: "error_mid_stream"})
    )

    assert "text" in events[-2][1]
    assert events[-1][1] == {
        "error": {
            "code": "upstream_interrupted",
            "message": "The model provider's stream was cut off.",
            "retryable": True,
        }
    }


async def test_answer_without_a_finish_reason_ends_as_incomplete() -> None:
    events = await _events(_answer(GenericFakeChatModel(messages=iter([AIMessage("a b")]))))

    assert events[-1][1]["error"]["code"] == "upstream_incomplete"


async def test_a_late_subscriber_replays_from_any_event_id() -> None:
    answer = _answer(build_demo_model(0, 0))
    everything = await _events(answer)

    replayed = [json.loads(str(e.data)) async for e in answer.subscribe(after=3)]

    assert replayed == [payload for _, payload in everything[4:]]


async def test_two_subscribers_see_the_same_events() -> None:
    answer = _answer(build_demo_model(0.001, 0))
    answer.start()

    async def read() -> list[str]:
        return [str(e.data) async for e in answer.subscribe()]

    first, second = await asyncio.gather(read(), read())
    assert first == second
    assert len(first) > 10


class _EndlessModel(GenericFakeChatModel):
    """Writes forever, counting what it wrote."""

    written: int = 0

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        while True:
            await asyncio.sleep(0.005)
            self.written += 1
            yield ChatGenerationChunk(message=AIMessageChunk(content="more "))


async def test_leaving_the_stream_stops_generation_at_once() -> None:
    model = _EndlessModel(messages=iter(()))
    answer = _answer(model)
    stream = answer_events(answer)
    for _ in range(3):
        await anext(stream)

    started = asyncio.get_running_loop().time()
    await stream.aclose()
    stopped_at = model.written
    await asyncio.sleep(0.1)

    assert asyncio.get_running_loop().time() - started < 0.5
    assert answer.finished
    assert answer.outcome == "client_disconnected"
    assert model.written == stopped_at


class _Counting:
    def __init__(self) -> None:
        self.started = 0
        self.finished = 0

    def answer_started(self, meta: AnswerMeta) -> None:
        self.started += 1

    def answer_finished(self, record: Any) -> None:
        self.finished += 1


async def test_a_hangup_before_generation_runs_leaves_nothing_counted_or_waiting() -> None:
    observer = _Counting()
    meta = AnswerMeta(request_id="rid", provider="demo", model="m", prompt="explain")
    answer = Answer(
        meta,
        AIWriter(build_demo_model(0, 0), PROMPTS),
        AnswerRequest("q", "explain", {}),
        upstream_close_timeout=1.0,
        observer=observer,
    )

    answer.start()
    await answer.cancel()  # before the task's first step

    assert answer.finished
    assert (observer.started, observer.finished) == (0, 0)
    assert [e async for e in answer.subscribe()] == []


class _CancelSwallowingWriter:
    """Writes forever and swallows a cancel, as asyncio.wait_for can on Python 3.11."""

    def __init__(self) -> None:
        self.written = 0
        self.swallowed = 0

    async def stream(self, question: str, **kwargs: Any) -> AsyncIterator[str]:
        while True:
            try:
                await asyncio.sleep(0.005)
            except asyncio.CancelledError:
                self.swallowed += 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
            self.written += 1
            yield "more "


async def test_a_cancel_swallowed_below_still_stops_the_answer() -> None:
    writer = _CancelSwallowingWriter()
    meta = AnswerMeta(request_id="rid", provider="demo", model="m", prompt="explain")
    request = AnswerRequest("question", "explain", {})
    answer = Answer(meta, cast(AIWriter, writer), request, upstream_close_timeout=1.0)
    stream = answer_events(answer)
    for _ in range(3):
        await anext(stream)

    await stream.aclose()

    assert writer.swallowed == 1
    assert answer.finished
    assert answer.outcome == "client_disconnected"
    stopped_at = writer.written
    await asyncio.sleep(0.05)
    assert writer.written == stopped_at


class _SlowClosingResponse:
    """An upstream response whose close takes a moment (a TLS close_notify, say)."""

    is_closed = False

    async def aclose(self) -> None:
        await asyncio.sleep(0.1)
        self.is_closed = True


async def test_a_second_cancel_while_the_first_closes_the_upstream_cancels_nothing_more() -> None:
    """Shutdown aborts an answer, and the client hangs up while its upstream closes."""
    answer = _answer(_EndlessModel(messages=iter(())))
    answer.start()
    stream = answer.subscribe()
    await anext(stream)
    await anext(stream)  # a text: generation is under way
    response = _SlowClosingResponse()
    answer._upstream._responses.add(response)  # type: ignore[arg-type]
    task = answer._task
    assert task is not None

    first = asyncio.create_task(answer.cancel())
    await asyncio.sleep(0.03)  # the answer's task is now closing its upstream
    await answer.cancel()
    await first

    assert task.cancelling() == 1
    assert response.is_closed
    assert answer.outcome == "client_disconnected"
