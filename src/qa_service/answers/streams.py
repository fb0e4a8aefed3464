"""One answer's life: generation in its own task, a numbered event log, subscribers, cancel.

Why generation runs in a task of its own, not inside the response's generator:
sse-starlette stops a stream by cancelling an anyio cancel scope, and anyio
re-delivers that cancellation every loop iteration until the scope exits.
LangChain runs each chain step in a child asyncio task, which the repeated
cancels reach too. They break the shield httpcore puts around closing a
response (seen: `response_closed.failed exception=CancelledError`), and
that close marks itself done first, so the socket stays open and the provider
keeps generating. A separate task, cancelled exactly once, lets the SDKs close
their responses; `AnswerUpstream` closes any the cancel could not reach
(see upstream.py). tests/integration/test_cancellation.py watches the
upstream socket to prove both.

A cancel is also made to take effect when a library below swallows it
(Python 3.11's asyncio.wait_for can): the request to stop is kept as state,
the generation loop honours it at the next piece, and `cancel` closes the
answer's upstream responses itself if the task has not ended in time.

The event log is also what Last-Event-ID resumption needs: every event keeps
its id (`<answer id>:<seq>`, seq 0 is `meta`), and `subscribe(after=...)`
replays from any point.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from sse_starlette import ServerSentEvent

from qa_service.core.errors import SHUTTING_DOWN, PublicError, UpstreamIncompleteError
from qa_service.core.events import AnswerMeta, AnswerSummary
from qa_service.generation.failures import classify_failure, upstream_status
from qa_service.generation.upstream import AnswerUpstream
from qa_service.generation.writer import AIWriter, GenerationReport
from qa_service.wire import native as events

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    question: str
    prompt: str
    configurable: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """How one answer went, for logs and metrics. Never the question or the text."""

    request_id: str
    provider: str
    model: str
    prompt: str
    outcome: str  # complete | error | client_disconnected
    error_code: str | None
    error_cause: str | None  # exception type; its message can carry secrets
    upstream_status: int | None
    finish_reason: str | None
    pieces: int
    chars: int
    ttft_ms: float | None
    duration_ms: float
    input_tokens: int | None
    output_tokens: int | None


class AnswerObserver(Protocol):
    def answer_started(self, meta: AnswerMeta) -> None: ...
    def answer_finished(self, record: AnswerRecord) -> None: ...


class Answer:
    """One answer: generates in its own task and keeps every event it published."""

    def __init__(
        self,
        meta: AnswerMeta,
        writer: AIWriter,
        request: AnswerRequest,
        upstream_close_timeout: float,
        observer: AnswerObserver | None = None,
    ) -> None:
        self.meta = meta
        self.id = meta.request_id
        self.outcome = "client_disconnected"
        self.error_code: str | None = None
        self.error_cause: str | None = None
        self.upstream_status: int | None = None
        self.ttft_ms: float | None = None
        self.chars = 0
        self.pieces = 0
        self._writer = writer
        self._request = request
        self._close_timeout = upstream_close_timeout
        self._upstream = AnswerUpstream(upstream_close_timeout)
        self._stop_requested = False
        self._events: list[ServerSentEvent] = []
        self._published = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        self._abort_error: PublicError | None = None
        self._observer = observer
        self._started = time.perf_counter()

    @property
    def finished(self) -> bool:
        """True once the last event (done or error) is published, or generation stopped."""
        return self._ended

    def start(self) -> None:
        """Start generating; idempotent. Must run inside the event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._generate(), name=f"answer-{self.id}"
            )

    async def cancel(self) -> None:
        """Stop generating and wait (bounded) until the upstream request is closed."""
        task = self._task
        if task is None or task.done():
            return
        if not self._stop_requested:
            # Once: a second cancel (shutdown's abort, then the hang-up it
            # causes) would land in the SDKs' own cleanup.
            self._stop_requested = True
            task.cancel()
        # Shielded: this runs while the caller is itself being cancelled.
        with anyio.move_on_after(self._close_timeout, shield=True):
            await asyncio.wait({task})
        if not task.done():
            # The cancel did not take: end the provider's request from here.
            await self._upstream.close()
        # A task cancelled before its first step never ran _generate's finally.
        if task.done() and not self._ended:
            self._publish_end()

    async def abort(self, public: PublicError) -> None:
        """Stop generating and end the answer with `public` as its error event."""
        if not self._ended:
            self._abort_error = public
            await self.cancel()

    async def subscribe(self, after: int = -1) -> AsyncGenerator[ServerSentEvent]:
        """Every event with seq > `after`, as published, until the answer ends."""
        next_seq = after + 1
        while True:
            while next_seq < len(self._events):
                yield self._events[next_seq]
                next_seq += 1
            if self.finished:
                return
            await self._published.wait()

    def _publish(self, event: ServerSentEvent) -> None:
        self._events.append(event)
        # Wake every subscriber, then arm a fresh event for the next publish.
        published, self._published = self._published, asyncio.Event()
        published.set()

    def _elapsed_ms(self) -> float:
        return round((time.perf_counter() - self._started) * 1000, 1)

    async def _generate(self) -> None:
        # Here, not in start(): started and finished are then reported in pairs,
        # even for a task cancelled before it ever ran.
        if self._observer is not None:
            self._observer.answer_started(self.meta)
        log.debug("generating", extra={"prompt": self.meta.prompt})
        self._publish(events.meta(self.id, 0, self.meta))
        report = GenerationReport()
        try:
            async with self._upstream.recording():
                texts = self._writer.stream(
                    self._request.question,
                    prompt=self._request.prompt,
                    report=report,
                    configurable=self._request.configurable,
                )
                async with aclosing(texts):
                    async for chunk in texts:
                        if self._stop_requested:
                            break
                        self._publish_text(chunk)
            if self._stop_requested:
                raise asyncio.CancelledError  # the cancel was swallowed below us
            if report.finish_reason is None:
                raise UpstreamIncompleteError
        except asyncio.CancelledError:
            self._publish_stopped()
            raise
        # Exception, never BaseException: cancellation must pass through untouched.
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error event
            if self._stop_requested:
                # The failure is our own doing: cancel closed the upstream.
                self._publish_stopped()
            else:
                self._publish_error(exc)
        else:
            self._publish_done(report)
        finally:
            self._publish_end()
            if self._observer is not None:
                self._observer.answer_finished(self._record(report))

    def _publish_stopped(self) -> None:
        if self._abort_error is not None:
            self._publish_public_error(self._abort_error, "Aborted")

    def _publish_text(self, chunk: str) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = self._elapsed_ms()
        self.chars += len(chunk)
        self.pieces += 1
        self._publish(events.text(self.id, len(self._events), chunk))

    def _publish_done(self, report: GenerationReport) -> None:
        self.outcome = "complete"
        summary = AnswerSummary(
            finish_reason=report.finish_reason,
            usage=report.usage,
            ttft_ms=self.ttft_ms,
            chars=self.chars,
            duration_ms=self._elapsed_ms(),
        )
        self._publish(events.done(self.id, len(self._events), summary))

    def _publish_error(self, exc: Exception) -> None:
        self._publish_public_error(classify_failure(exc), type(exc).__name__, upstream_status(exc))

    def _publish_public_error(
        self, public: PublicError, cause: str, status: int | None = None
    ) -> None:
        self.outcome = "error"
        self.error_code = public.code
        # Type and status only: provider error bodies can echo the API key.
        self.error_cause = cause
        self.upstream_status = status
        self._publish(events.error(self.id, len(self._events), public))

    def _publish_end(self) -> None:
        self._ended = True
        self._published.set()

    def _record(self, report: GenerationReport) -> AnswerRecord:
        usage = report.usage or {}
        return AnswerRecord(
            request_id=self.id,
            provider=self.meta.provider,
            model=self.meta.model,
            prompt=self.meta.prompt,
            outcome=self.outcome,
            error_code=self.error_code,
            error_cause=self.error_cause,
            upstream_status=self.upstream_status,
            finish_reason=report.finish_reason,
            pieces=self.pieces,
            chars=self.chars,
            ttft_ms=self.ttft_ms,
            duration_ms=self._elapsed_ms(),
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
        )


async def answer_events(
    answer: Answer, shutdown: anyio.Event | None = None, drain_seconds: float = 0.0
) -> AsyncGenerator[ServerSentEvent]:
    """One connection's stream: the answer's events. Hanging up cancels the answer.

    When `shutdown` is set (SIGTERM), the answer gets `drain_seconds` to finish;
    then it ends with a `shutting_down` error event, never a silent close.
    """
    answer.start()
    watcher = None
    if shutdown is not None:
        watcher = asyncio.get_running_loop().create_task(
            _end_at_shutdown(answer, shutdown, drain_seconds)
        )
    try:
        async with aclosing(answer.subscribe()) as stream:
            async for event in stream:
                yield event
    finally:
        if watcher is not None:
            watcher.cancel()
        await answer.cancel()


async def _end_at_shutdown(answer: Answer, shutdown: anyio.Event, drain_seconds: float) -> None:
    await shutdown.wait()
    await asyncio.sleep(drain_seconds)
    await answer.abort(SHUTTING_DOWN)
