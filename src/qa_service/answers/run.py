"""One answer's generation: its own task, cancelled once, appending domain events to the log.

Why generation runs in a task of its own, not inside a response's generator:
sse-starlette stops a stream by cancelling an anyio cancel scope, and anyio
re-delivers that cancellation every loop iteration until the scope exits.
LangChain runs each chain step in a child asyncio task, which the repeated
cancels reach too. They break the shield httpcore puts around closing a
response (seen: `response_closed.failed exception=CancelledError`), and
that close marks itself done first, so the socket stays open and the provider
keeps generating. A separate task, cancelled exactly once, lets the SDKs close
their responses; `AnswerUpstream` closes any the cancel could not reach
(see generation/upstream.py). tests/integration/test_cancellation.py watches
the upstream socket to prove both. The task also outlives its connection, so
a client that reconnects (Last-Event-ID) finds the answer still going.

A cancel is also made to take effect when a library below swallows it
(Python 3.11's asyncio.wait_for can): the request to stop is kept as state,
the generation loop honours it at the next piece, and `cancel` closes the
answer's upstream responses itself if the task has not ended in time.

While it runs, a heartbeat renews the producer's lease (readers on other
replicas learn from its expiry that this process died) and, with a resume
grace period, stops the answer once no reader has been attached for that long.
It is stopped the same way (core/loops.py), and before the lease is released:
on 3.11 a single cancel() left 8-16 of 300 heartbeats renewing their lease
for ever, each holding a Redis connection (issue 20).

How the last event and the lease's release go: answers/ending.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio

from qa_service.answers.ending import end_lease, log_final
from qa_service.answers.model import AnswerObserver, AnswerRequest, RunStats, answer_ref
from qa_service.answers.ports import AnswerStore
from qa_service.core.errors import (
    CANCELLED,
    PRODUCER_LOST,
    PublicError,
    StoreUnavailableError,
    UpstreamIncompleteError,
)
from qa_service.core.events import (
    AnswerEvent,
    AnswerMeta,
    AnswerSummary,
    Done,
    Failed,
    Meta,
    Text,
)
from qa_service.core.loops import Loop, pause
from qa_service.generation.failures import classify_failure, upstream_status
from qa_service.generation.report import GenerationReport
from qa_service.generation.upstream import AnswerUpstream
from qa_service.generation.writer import AIWriter

log = logging.getLogger(__name__)


class TextSource(Protocol):
    """Where an answer's text comes from: the model (`WriterSource`), or, with the
    answer cache, a finished answer's recording or another answer's log
    (answers/cache/sources.py)."""

    def stream(self, report: GenerationReport) -> AsyncGenerator[str]:
        """The text, piece by piece; `report` is filled with how it finished."""
        ...


@dataclass(frozen=True, slots=True)
class WriterSource:
    """The answer to `request`, as the model writes it."""

    writer: AIWriter
    request: AnswerRequest

    def stream(self, report: GenerationReport) -> AsyncGenerator[str]:
        request = self.request
        return self.writer.stream(
            request.question,
            prompt=request.prompt,
            prompt_version=request.prompt_version,
            history=request.history,
            report=report,
            configurable=request.configurable,
            max_tokens=request.max_tokens,
        )


class LogEndedElsewhereError(Exception):
    """Another writer ended this answer's log: a reader that declared its producer lost."""


@dataclass(frozen=True, slots=True)
class RunTiming:
    # How long a cancel waits for the task before it closes the upstream itself.
    close_seconds: float
    # The producer's lease: readers declare it lost this long after its last renewal.
    lease_seconds: float
    # With no reader attached anywhere for this long, the answer is cancelled.
    # 0: the connection cancels it when it hangs up (answers/follow.py).
    grace_seconds: float


class AnswerRun:
    """Generates one answer in its own task; every event goes to the store's log."""

    def __init__(
        self,
        meta: AnswerMeta,
        source: TextSource,
        store: AnswerStore,
        timing: RunTiming,
        observers: Sequence[AnswerObserver] = (),
        on_ending: Callable[[asyncio.Task[None]], None] | None = None,
    ) -> None:
        self.meta = meta
        self.id = meta.answer_id
        self.stats = RunStats()
        # The Done's summary, once the answer finished normally.
        self.summary: AnswerSummary | None = None
        # The fallback provider wrote it (QA_FALLBACK_PROVIDER), once it ended.
        self.by_fallback = False
        # The first text, or the end if none came: what a held response waits for.
        self._first_output = asyncio.Event()
        self._failed_before_text: PublicError | None = None
        self._source = source
        self._store = store
        self._timing = timing
        self._observers = observers
        self._upstream = AnswerUpstream(timing.close_seconds)
        self._next_seq = 0
        self._task: asyncio.Task[None] | None = None
        self._heartbeat: Loop | None = None
        self._stop: tuple[PublicError, str] | None = None
        self._closer: asyncio.Task[None] | None = None
        # Stores the last event and releases the lease; a task of its own, so
        # no cancel can cut it short. It may outlive `_task`: `on_ending` is
        # given it, so that shutdown waits for it before the stores close.
        self._final: asyncio.Task[None] | None = None
        self._on_ending = on_ending

    @property
    def source(self) -> TextSource:
        """Where its text comes from: the model, a recording, or another answer."""
        return self._source

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The answer's task, once started."""
        return self._task

    @property
    def billed_tokens(self) -> int:
        """What the answer costs its client's token budget when it ends. With the
        answer cache, nothing: the provider call its answers share is charged
        to the client that started it, when it ends (answers/cache/answer_cache.py)."""
        return 0 if self.meta.cache is not None else self.stats.billed_tokens

    @property
    def ended(self) -> bool:
        return self._task is not None and self._task.done()

    async def first_output(self, seconds: float) -> PublicError | None:
        """Wait up to `seconds` for the first text or the end of the answer.

        Returns the error when the answer ended before any text: the caller
        can still refuse with a real HTTP status, since nothing was sent.
        """
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._first_output.wait()
        return self._failed_before_text

    def start(self) -> asyncio.Task[None]:
        """Start generating; idempotent. Must run inside the event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._generate(), name=f"answer-{answer_ref(self.id)}"
            )
        return self._task

    async def cancel(self, public: PublicError = CANCELLED, outcome: str = "cancelled") -> None:
        """Stop generating, end the log with `public`, and wait (bounded) until
        the upstream request is closed."""
        task = self._task
        if task is None or task.done():
            return
        # Once: a second cancel (shutdown's abort, then the hang-up it causes)
        # would land in the SDKs' own cleanup. And never once the last event
        # is being stored: the answer has ended, and its end must be logged.
        if self._stop is None and self._final is None:
            self._stop = (public, outcome)
            task.cancel()
        # Shielded: this runs while the caller is itself being cancelled.
        with anyio.move_on_after(self._timing.close_seconds, shield=True):
            await asyncio.wait({task})
        if not task.done():
            # The cancel did not take: end the provider's request from here.
            await self._upstream.close()
        elif self._final is None:
            # Cancelled before its first step: _generate never ran to end the log.
            self._start_ending(self._store_final(Failed(self._next_seq, public)))
        if self._final is not None:
            with anyio.move_on_after(self._timing.close_seconds * 2, shield=True):
                await asyncio.wait({self._final})

    def cancel_soon(self, public: PublicError = CANCELLED, outcome: str = "cancelled") -> None:
        """`cancel`, from code that must not wait for it (the heartbeat, a listener)."""
        if self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self.cancel(public, outcome))

    async def _generate(self) -> None:
        # Here, not in start(): started and finished are then reported in pairs.
        for observer in self._observers:
            observer.answer_started(self.meta)
        log.debug("generating", extra={"prompt": self.meta.prompt})
        report = GenerationReport()
        heartbeat = self._heartbeat = Loop(self._beat, name=f"heartbeat-{answer_ref(self.id)}")
        try:
            await self._append(Meta(self._next_seq, self.meta))
            async with self._upstream.recording():
                texts = self._source.stream(report)
                async with aclosing(texts):
                    async for chunk in texts:
                        if self._stop is not None:
                            break
                        await self._append_text(chunk)
            if self._stop is not None:
                raise asyncio.CancelledError  # the cancel was swallowed below us
            if report.finish_reason is None:
                raise UpstreamIncompleteError
        except asyncio.CancelledError:
            await self._end_stopped()
            raise
        except StoreUnavailableError as exc:
            # Nothing more can be logged; readers learn it from the store themselves.
            self.stats.note_error(exc.public, type(exc).__name__)
            await self._end_in_own_task(self._end_lease())
        except LogEndedElsewhereError:
            # A reader declared this producer lost (its lease lapsed while it
            # was slow): the log has its end, and nothing more is worth paying for.
            self.stats.note_error(PRODUCER_LOST, "LogEndedElsewhereError")
            await self._end_in_own_task(self._end_lease())
        # Exception, never BaseException: cancellation must pass through untouched.
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error event
            if self._stop is not None:
                await self._end_stopped()  # our own doing: cancel closed the upstream
            else:
                public = classify_failure(exc)
                self.stats.note_error(public, type(exc).__name__, upstream_status(exc))
                await self._append_final(Failed(self._next_seq, public))
        else:
            self.stats.outcome = "complete"
            summary = replace(self.stats.summary(report), cache=self.meta.cache)
            self.summary = summary
            await self._append_final(Done(self._next_seq, summary))
        finally:
            # Every path above stopped it, and waited, before the lease went
            # (_end_lease); a backstop with no await, so a second cancel can
            # never cut the bookkeeping below short.
            heartbeat.ask_to_stop()
            # Also when the end could not be logged: a held response stops waiting.
            self._first_output.set()
            self.stats.output_tokens = (report.usage or {}).get("output_tokens")
            self.by_fallback = report.fallback
            record = self.stats.record(self.meta, report)
            for observer in self._observers:
                observer.answer_finished(record)

    async def _beat(self, stop: asyncio.Event) -> None:
        timing = self._timing
        interval = timing.lease_seconds / 3
        if timing.grace_seconds > 0:
            interval = min(interval, timing.grace_seconds / 2)
        # At a fixed rate: a beat starts `interval` after the last one started,
        # however long that one's round trips took. A sleep after them made the
        # lease's renewals `interval` plus two round trips apart, and on a busy
        # process the lease lapsed under a producer that was renewing it.
        loop = asyncio.get_running_loop()
        beat = loop.time()
        while not stop.is_set():
            try:
                await self._store.renew_lease(self.id, timing.lease_seconds)
                if timing.grace_seconds > 0 and not await self._store.reader_present(self.id):
                    log.info("no reader came back within the resume grace period")
                    self.cancel_soon(CANCELLED, "client_disconnected")
                    return
            except Exception as exc:  # noqa: BLE001 - a dead heartbeat would look like a dead producer
                log.warning("heartbeat failed %s", type(exc).__name__)
            beat = max(beat + interval, loop.time())
            if await pause(stop, beat - loop.time()):
                return

    async def _end_stopped(self) -> None:
        public, outcome = self._stop or (CANCELLED, "client_disconnected")
        self.stats.note_stop(public, outcome)
        await self._append_final(Failed(self._next_seq, public))

    async def _append(self, event: AnswerEvent) -> None:
        if not await self._store.append(self.id, event):
            raise LogEndedElsewhereError
        self._next_seq += 1

    async def _append_text(self, chunk: str) -> None:
        self.stats.count_text(chunk)
        await self._append(Text(self._next_seq, chunk))
        self._first_output.set()

    async def _append_final(self, event: AnswerEvent) -> None:
        """The last event, then the lease goes."""
        await self._end_in_own_task(self._store_final(event))

    async def _end_in_own_task(self, ending: Coroutine[Any, Any, None]) -> None:
        """Run the answer's `ending` in a task a cancel cannot reach: anyio's
        shield does not stop asyncio's own task.cancel(), and a cancel cutting
        the heartbeat's stop short left the lease unreleased."""
        if self._final is None:
            final = self._start_ending(ending)
        else:
            final = self._final
            ending.close()
        await asyncio.shield(final)

    def _start_ending(self, ending: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        final = self._final = asyncio.get_running_loop().create_task(ending)
        if self._on_ending is not None:
            self._on_ending(final)
        return final

    async def _store_final(self, event: AnswerEvent) -> None:
        try:
            await self._log_final(event)
        finally:
            if isinstance(event, Failed) and self.stats.pieces == 0:
                self._failed_before_text = event.error
            self._first_output.set()

    async def _log_final(self, event: AnswerEvent) -> None:
        await log_final(self._store, self.id, event, self._heartbeat, self._timing.close_seconds)

    async def _end_lease(self) -> None:
        await end_lease(self._store, self.id, self._heartbeat, self._timing.close_seconds)
