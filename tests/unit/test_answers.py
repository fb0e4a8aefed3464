"""An answer's life with fake models and the in-process store: events, ids,
replay, resume, grace after a hang-up, cancel, and a lost producer."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import anyio
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from qa_service.answers.connection import answer_events, connection_events
from qa_service.answers.follow import FollowTiming, follow
from qa_service.answers.model import (
    ANSWER_ID,
    AnswerObserver,
    AnswerRecord,
    AnswerRequest,
    answer_ref,
)
from qa_service.answers.registry import AnswerRegistry, CancelResult
from qa_service.answers.run import AnswerRun, RunTiming
from qa_service.api.opening import OPENING_ALLOWANCE_SECONDS
from qa_service.core.errors import PRODUCER_LOST, SHUTTING_DOWN, QAServiceError
from qa_service.core.events import AnswerEvent, AnswerMeta, Failed, Meta, Text, is_terminal
from qa_service.generation.demo import SCENARIO_CONFIG_KEY, build_demo_model
from qa_service.generation.prompts import load_prompts
from qa_service.generation.report import GenerationReport
from qa_service.generation.writer import AIWriter
from qa_service.stores.memory_answers import MemoryAnswerStore
from qa_service.wire import native

PROMPTS = load_prompts(Path(__file__).resolve().parents[2] / "prompts")
META = AnswerMeta(request_id="rid", provider="demo", model="m", prompt="explain")
REQUEST = AnswerRequest("question", "explain", {})


def _registry(
    writer: Any,
    grace: float = 0.0,
    lease: float = 3.0,
    observers: Sequence[AnswerObserver] = (),
) -> AnswerRegistry:
    if not isinstance(writer, AIWriter) and hasattr(writer, "_astream"):
        writer = AIWriter(writer, PROMPTS)
    timing = RunTiming(close_seconds=1.0, lease_seconds=lease, grace_seconds=grace)
    return AnswerRegistry(MemoryAnswerStore(300), cast(AIWriter, writer), timing, observers)


async def _wire(
    events: AsyncIterator[AnswerEvent], answer_id: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The native protocol's (id, payload) pairs, as a client would read them."""
    rendered = native.render_stream(cast(Any, events), answer_id)
    async with asyncio.timeout(10):
        return [(e.id or "", json.loads(str(e.data))) async for e in rendered]


async def _new(registry: AnswerRegistry, request: AnswerRequest = REQUEST) -> list[Any]:
    run = await registry.start(request, META)
    return await _wire(answer_events(registry, run.id, -1), run.id)


async def test_complete_answer_is_meta_texts_then_done_with_answer_scoped_ids() -> None:
    events = await _new(_registry(build_demo_model(0, 0)))

    kinds = [next(iter(payload)) for _, payload in events]
    assert kinds[0] == "meta"
    assert kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"text"}
    answer_id = events[0][1]["meta"]["answer_id"]
    assert ANSWER_ID.fullmatch(answer_id)
    assert events[0][1]["meta"]["request_id"] == "rid"  # the correlation id stays apart
    assert [event_id for event_id, _ in events] == [f"{answer_id}:{n}" for n in range(len(events))]
    done = events[-1][1]["done"]
    assert done["chars"] == sum(len(p["text"]) for _, p in events if "text" in p)
    assert done["ttft_ms"] <= done["duration_ms"]


async def test_answer_ids_are_new_for_every_answer() -> None:
    registry = _registry(build_demo_model(0, 0))
    ids = {(await _new(registry))[0][1]["meta"]["answer_id"] for _ in range(20)}
    assert len(ids) == 20


async def test_the_first_event_tells_a_browser_to_reconnect_within_the_grace() -> None:
    meta_event = native.render("a" * 22, Meta(0, META))
    assert meta_event.retry == native.RECONNECT_MS
    assert b"retry: 1000" in meta_event.encode()


async def test_failure_mid_answer_is_one_error_event_after_the_text() -> None:
    model = build_demo_model(0, 0)
    request = AnswerRequest("q", "explain", {SCENARIO_CONFIG_KEY: "error_mid_stream"})
    events = await _new(_registry(model), request)

    assert "text" in events[-2][1]
    assert events[-1][1] == {
        "error": {
            "code": "upstream_interrupted",
            "message": "The model provider's stream was cut off.",
            "retryable": True,
        }
    }


async def test_answer_without_a_finish_reason_ends_as_incomplete() -> None:
    events = await _new(_registry(GenericFakeChatModel(messages=iter([AIMessage("a b")]))))

    assert events[-1][1]["error"]["code"] == "upstream_incomplete"


async def test_a_late_reader_replays_from_any_seq() -> None:
    registry = _registry(build_demo_model(0, 0))
    everything = await _new(registry)
    answer_id = everything[0][1]["meta"]["answer_id"]

    replayed = await _wire(answer_events(registry, answer_id, 3), answer_id)

    assert replayed == everything[4:]


class _ReadsInParts(MemoryAnswerStore):
    """A store that gives at most two events a read, as Redis gives a long log
    a thousand batches at a time."""

    async def read(self, answer_id: str, after: int, wait_seconds: float) -> list[AnswerEvent]:
        return (await super().read(answer_id, after, wait_seconds))[:2]


async def test_the_whole_log_is_read_however_many_parts_a_store_gives_it_in() -> None:
    timing = RunTiming(close_seconds=1.0, lease_seconds=3.0, grace_seconds=0.0)
    writer = AIWriter(build_demo_model(0, 0), PROMPTS)
    registry = AnswerRegistry(_ReadsInParts(300), writer, timing)
    run = await registry.start(REQUEST, META)
    everything = [event async for event in answer_events(registry, run.id, -1)]

    whole = await registry.log_through(run.id)
    through = await registry.log_through(run.id, 5)

    assert len(everything) > 6
    assert whole == everything
    assert through[:6] == everything[:6]
    assert through[-1].seq >= 5


async def test_two_readers_see_the_same_events() -> None:
    registry = _registry(build_demo_model(0.001, 0))
    run = await registry.start(REQUEST, META)

    async def read() -> list[Any]:
        return await _wire(answer_events(registry, run.id, -1))

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


async def _read_some(stream: AsyncIterator[AnswerEvent], count: int) -> list[AnswerEvent]:
    async with asyncio.timeout(10):
        return [await anext(stream) for _ in range(count)]


class _Writes(Protocol):
    written: int


@dataclass
class _Underway:
    """An answer that writes forever, and one reader that has read its first events."""

    writer: _Writes
    registry: AnswerRegistry
    run: AnswerRun
    stream: AsyncGenerator[AnswerEvent]
    seen: list[AnswerEvent]

    async def log(self) -> list[AnswerEvent]:
        return await self.registry.store.read(self.run.id, -1, 0)


StartUnderway = Callable[..., Awaitable[_Underway]]


@pytest.fixture
async def underway() -> AsyncIterator[StartUnderway]:
    """Starts answers that write forever (an _EndlessModel unless `writer` is given),
    and reads `read` events of each; ends whatever a test left running."""
    started: list[_Underway] = []

    async def start(grace: float = 0.0, read: int = 3, writer: _Writes | None = None) -> _Underway:
        writer = writer if writer is not None else _EndlessModel(messages=iter(()))
        registry = _registry(writer, grace=grace)
        run = await registry.start(REQUEST, META)
        answer = _Underway(writer, registry, run, answer_events(registry, run.id, -1), [])
        started.append(answer)
        answer.seen = await _read_some(answer.stream, read)
        return answer

    yield start
    for answer in started:
        await answer.stream.aclose()
        await answer.run.cancel()


async def test_without_grace_leaving_the_stream_stops_generation_at_once(
    underway: StartUnderway,
) -> None:
    answer = await underway(grace=0)

    await answer.stream.aclose()

    # No clock: by the time the hang-up has been handled, the answer's task
    # has ended, and nothing drives the model any more.
    run = answer.run
    assert run.ended
    assert (run.stats.outcome, run.stats.error_code) == ("client_disconnected", None)
    log = await answer.log()
    assert isinstance(log[-1], Failed)
    assert log[-1].error.code == "cancelled"


class _SlowToLeave:
    """A reader's place whose leaving waits on loops (up to seconds on a busy
    process); notes whether the answer was still generating when it began."""

    def __init__(self, registry: AnswerRegistry, answer_id: str) -> None:
        self._registry = registry
        self._answer_id = answer_id
        self.generating_at_leave: bool | None = None

    async def leave(self) -> None:
        self.generating_at_leave = self._registry.generating(self._answer_id)

    def drop(self) -> None:
        pass


async def test_without_grace_a_hangup_cancels_the_answer_before_leaving_its_place() -> None:
    registry = _registry(_EndlessModel(messages=iter(())), grace=0)
    run = await registry.start(REQUEST, META)
    place = _SlowToLeave(registry, run.id)
    stream = answer_events(registry, run.id, -1, place=cast(Any, place))
    await _read_some(stream, 3)

    await stream.aclose()

    # The provider's request closes within a second of a hang-up (README), so
    # the cancel may not wait behind the reader loops that leaving stops.
    assert place.generating_at_leave is False
    assert run.ended


async def test_with_grace_a_hangup_keeps_generating_and_a_resume_continues_exactly(
    underway: StartUnderway,
) -> None:
    answer = await underway(grace=0.5, read=4)
    await answer.stream.aclose()  # a network drop
    written_at_drop = answer.writer.written
    await asyncio.sleep(0.2)  # inside the grace period

    assert not answer.run.ended
    assert answer.writer.written > written_at_drop
    resumed = answer_events(answer.registry, answer.run.id, answer.seen[-1].seq)
    more = await _read_some(resumed, 20)
    await answer.registry.cancel(answer.run.id)
    await resumed.aclose()

    seqs = [e.seq for e in answer.seen + more]
    assert seqs == list(range(len(seqs)))  # nothing missed, nothing twice


async def test_with_grace_an_answer_nobody_resumes_is_cancelled_after_it(
    underway: StartUnderway,
) -> None:
    answer = await underway(grace=0.3)
    await answer.stream.aclose()
    left_at = asyncio.get_running_loop().time()

    async with asyncio.timeout(3):
        await asyncio.wait({answer.run.start()})

    assert 0.25 < asyncio.get_running_loop().time() - left_at < 1.5
    assert answer.run.stats.outcome == "client_disconnected"
    log = await answer.log()
    assert isinstance(log[-1], Failed)
    assert log[-1].error.code == "cancelled"


async def _stopped_on_hangup(run: AnswerRun) -> None:
    async with asyncio.timeout(5):
        await asyncio.wait({run.start()})
    assert (run.stats.outcome, run.stats.error_code) == ("client_disconnected", None)


async def test_with_grace_a_reader_attached_for_longer_keeps_its_answer_going(
    underway: StartUnderway,
) -> None:
    # Its presence lasts as long as it is attached, with no loop renewing it
    # (the in-process store); grace periods pass meanwhile.
    answer = await underway(grace=0.3)
    written = answer.writer.written
    await asyncio.sleep(1.2)  # four graces, the reader attached but not reading

    assert not answer.run.ended
    assert answer.writer.written > written


async def test_an_opener_slow_to_attach_on_a_starved_loop_does_not_lose_its_answer() -> None:
    # The allowance the opening request is given (api/opening.py): its stream's
    # first step may come long after the grace, and the answer waits for it.
    registry = _registry(_EndlessModel(messages=iter(())), grace=0.1, lease=0.3)
    run = await registry.start(REQUEST, META, reader_within=OPENING_ALLOWANCE_SECONDS)
    try:
        await asyncio.sleep(1.0)  # ten graces and three heartbeats, no reader yet

        assert not run.ended
    finally:
        await run.cancel()


async def test_with_grace_a_client_that_cannot_resume_stops_its_answer_at_once() -> None:
    registry = _registry(_EndlessModel(messages=iter(())), grace=5)
    run = await registry.start(REQUEST, META)
    stream = answer_events(registry, run.id, -1, resumable=False)
    await _read_some(stream, 3)

    await stream.aclose()

    assert run.ended  # at once, not after the 5 s grace
    await _stopped_on_hangup(run)


def _unresumable_events(registry: AnswerRegistry, answer_id: str) -> AsyncGenerator[AnswerEvent]:
    return connection_events(
        registry,
        answer_id,
        -1,
        anyio.Event(),
        drain_seconds=0,
        coalesce_seconds=0,
        resumable=False,
    )


async def test_a_client_that_cannot_resume_leaving_before_its_first_event_stops_its_answer() -> (
    None
):
    """A response closed before its body started: the events were never read."""
    registry = _registry(_EndlessModel(messages=iter(())), grace=5)
    run = await registry.start(REQUEST, META)

    await _unresumable_events(registry, run.id).aclose()

    assert run.ended
    await _stopped_on_hangup(run)


async def test_a_client_that_cannot_resume_whose_unread_events_are_dropped_stops_its_answer() -> (
    None
):
    registry = _registry(_EndlessModel(messages=iter(())), grace=5)
    run = await registry.start(REQUEST, META)
    events = _unresumable_events(registry, run.id)

    del events  # a response dropped before its body started: nothing closes it
    gc.collect()

    await _stopped_on_hangup(run)


async def test_an_explicit_cancel_ends_the_log_for_every_reader(underway: StartUnderway) -> None:
    answer = await underway(grace=5)
    registry, run = answer.registry, answer.run

    assert await registry.cancel(run.id) is CancelResult.CANCELLED
    async with asyncio.timeout(5):
        rest = [e async for e in answer.stream]

    assert isinstance(rest[-1], Failed)
    assert rest[-1].error.code == "cancelled"
    assert (run.stats.outcome, run.stats.error_code) == ("cancelled", "cancelled")
    assert await registry.cancel(run.id) is CancelResult.FINISHED
    with pytest.raises(QAServiceError) as unknown:
        await registry.cancel("x" * 22)
    assert unknown.value.public.code == "answer_not_found"


async def test_resume_is_refused_for_an_unknown_answer_or_another_request() -> None:
    registry = _registry(build_demo_model(0, 0))
    events = await _new(registry)
    answer_id = events[0][1]["meta"]["answer_id"]
    last = len(events) - 1

    with pytest.raises(QAServiceError) as unknown:
        await registry.resume_point("y" * 22, 0, REQUEST)
    with pytest.raises(QAServiceError) as other:
        await registry.resume_point(answer_id, 0, AnswerRequest("another", "explain", {}))
    with pytest.raises(QAServiceError) as beyond:
        await registry.resume_point(answer_id, last + 1, REQUEST)
    mid = await registry.resume_point(answer_id, 2, REQUEST)
    end = await registry.resume_point(answer_id, last, REQUEST)

    assert unknown.value.public.code == "answer_not_found"
    assert other.value.public.code == "resume_mismatch"
    assert beyond.value.public.code == "invalid_last_event_id"
    assert (mid.delivered_all, mid.replayed) == (False, last - 2)
    assert (end.delivered_all, end.replayed) == (True, 0)


async def test_a_producer_whose_lease_lapses_is_declared_lost_once() -> None:
    store = MemoryAnswerStore(300)
    await store.create("a" * 22, "f")
    await store.append("a" * 22, Meta(0, META))
    await store.append("a" * 22, Text(1, "hello"))
    await store.renew_lease("a" * 22, 0.2)  # and then the producer dies
    lost = []
    timing = FollowTiming(poll_seconds=0.05)

    async def read() -> list[AnswerEvent]:
        events = follow(store, "a" * 22, 0, timing, on_producer_lost=lambda: lost.append(1))
        async with asyncio.timeout(3):
            return [e async for e in events]

    first, second = await asyncio.gather(read(), read())

    assert first == second
    assert [type(e).__name__ for e in first] == ["Text", "Failed"]
    assert isinstance(first[-1], Failed)
    assert first[-1].error.code == "producer_lost"
    assert first[-1].seq == 2
    assert len(lost) == 1  # one reader's append won; the other read it


class _LateHeartbeats(MemoryAnswerStore):
    """Its producers' heartbeats never land in time, so every lease lapses while
    its answer runs: a busy process whose event loop runs the heartbeat late."""

    async def renew_lease(self, answer_id: str, seconds: float) -> None:
        return None


class _PausingWriter:
    """A piece, then silence longer than a reader's poll and the lease, then the end."""

    async def stream(
        self, question: str, *, report: GenerationReport, **kwargs: Any
    ) -> AsyncIterator[str]:
        yield "before "
        await asyncio.sleep(1.0)
        yield "after"
        report.finish_reason = "stop"


async def test_a_reader_in_the_producing_process_never_declares_its_running_producer_lost() -> None:
    timing = RunTiming(close_seconds=1.0, lease_seconds=0.2, grace_seconds=0.0)
    registry = AnswerRegistry(_LateHeartbeats(300), cast(AIWriter, _PausingWriter()), timing)
    run = await registry.start(REQUEST, META)

    async with asyncio.timeout(5):
        events = [event async for event in answer_events(registry, run.id, -1)]

    assert [type(e).__name__ for e in events] == ["Meta", "Text", "Text", "Done"]
    assert run.stats.outcome == "complete"


class _Counting:
    def __init__(self) -> None:
        self.started = 0
        self.records: list[AnswerRecord] = []

    @property
    def finished(self) -> int:
        return len(self.records)

    def answer_started(self, meta: AnswerMeta) -> None:
        self.started += 1

    def answer_finished(self, record: AnswerRecord) -> None:
        self.records.append(record)

    def producer_lost(self) -> None:
        pass


async def test_an_answers_record_counts_what_its_events_carried() -> None:
    observer = _Counting()
    registry = _registry(build_demo_model(0, 0), observers=[observer])
    run = await registry.start(REQUEST, META)
    events = await _wire(answer_events(registry, run.id, -1), run.id)
    async with asyncio.timeout(5):
        await asyncio.wait({run.start()})  # the record comes after the last event
    texts = [payload["text"] for _, payload in events if "text" in payload]
    done = events[-1][1]["done"]

    [record] = observer.records
    assert record.answer_ref == answer_ref(events[0][1]["meta"]["answer_id"])
    assert (record.outcome, record.error_code, record.finish_reason) == ("complete", None, "stop")
    assert (record.pieces, record.chars) == (len(texts), len("".join(texts)))
    assert record.ttft_ms == done["ttft_ms"]
    assert record.duration_ms >= done["duration_ms"]
    usage = done["usage"]
    assert (record.input_tokens, record.output_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )


async def test_a_cancel_before_generation_runs_counts_nothing_and_ends_the_log() -> None:
    observer = _Counting()
    registry = _registry(build_demo_model(0, 0), observers=[observer])

    run = await registry.start(REQUEST, META)
    await run.cancel()  # before the task's first step

    assert run.ended
    assert (observer.started, observer.finished) == (0, 0)
    log = await registry.store.read(run.id, -1, 0)
    assert len(log) == 1
    assert is_terminal(log[0])


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


async def test_a_cancel_swallowed_below_still_stops_the_answer(underway: StartUnderway) -> None:
    writer = _CancelSwallowingWriter()
    answer = await underway(writer=writer)

    await answer.stream.aclose()

    assert writer.swallowed == 1
    assert answer.run.ended
    assert answer.run.stats.outcome == "client_disconnected"
    stopped_at = writer.written
    await asyncio.sleep(0.05)
    assert writer.written == stopped_at


class _SlowClosingResponse:
    """An upstream response whose close takes a moment (a TLS close_notify, say)."""

    is_closed = False

    async def aclose(self) -> None:
        await asyncio.sleep(0.1)
        self.is_closed = True


async def test_a_second_cancel_while_the_first_closes_the_upstream_cancels_nothing_more(
    underway: StartUnderway,
) -> None:
    """Shutdown aborts an answer, and the client hangs up while its upstream closes."""
    answer = await underway(read=2)  # meta and a text: generation is under way
    run = answer.run
    response = _SlowClosingResponse()
    run._upstream._responses.add(response)  # type: ignore[arg-type]
    task = run.start()

    first = asyncio.create_task(run.cancel(SHUTTING_DOWN, "error"))
    await asyncio.sleep(0.03)  # the answer's task is now closing its upstream
    await run.cancel()
    await first

    assert task.cancelling() == 1
    assert response.is_closed
    assert run.stats.error_code == "shutting_down"  # the first cancel's reason stands
    await answer.stream.aclose()


async def test_a_producer_declared_lost_stops_instead_of_writing_past_the_end(
    underway: StartUnderway,
) -> None:
    """Its lease lapsed while it was slow, and a reader ended the log: the
    producer must not go on paying for text nobody can ever read."""
    answer = await underway(grace=5)
    store, run = answer.registry.store, answer.run
    await answer.stream.aclose()

    # No await between reading the log and appending: the producer cannot slip in.
    log = await answer.log()
    declared = await store.append(run.id, Failed(len(log), PRODUCER_LOST))
    async with asyncio.timeout(3):
        await asyncio.wait({run.start()})
    written = answer.writer.written
    await asyncio.sleep(0.05)

    final = await answer.log()
    assert declared
    assert final[-1] == Failed(len(log), PRODUCER_LOST)
    assert [e.seq for e in final] == list(range(len(final)))  # nothing after the end
    assert run.stats.error_code == "producer_lost"
    assert answer.writer.written == written


class _SlowFinalStore(MemoryAnswerStore):
    """Storing the last event takes a moment (a Redis round trip, say)."""

    def __init__(self) -> None:
        super().__init__(300)
        self.final_started = asyncio.Event()

    async def append(self, answer_id: str, event: AnswerEvent) -> bool:
        if is_terminal(event):
            self.final_started.set()
            await asyncio.sleep(0.2)
        return await super().append(answer_id, event)


async def test_a_cancel_while_the_last_event_is_stored_leaves_the_log_ended() -> None:
    store = _SlowFinalStore()
    timing = RunTiming(close_seconds=1.0, lease_seconds=3.0, grace_seconds=0)
    registry = AnswerRegistry(store, AIWriter(build_demo_model(0, 0), PROMPTS), timing)
    run = await registry.start(REQUEST, META)
    async with asyncio.timeout(5):
        await store.final_started.wait()

    await registry.cancel(run.id)

    log = await store.read(run.id, -1, 0)
    assert type(log[-1]).__name__ == "Done"
    assert run.stats.outcome == "complete"
    assert not await store.producer_alive(run.id)
