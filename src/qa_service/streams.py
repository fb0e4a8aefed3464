"""One answer's life: runs the writer, numbers its events, ends it explicitly, cleans up.

An `Answer` issues every event id (`<answer id>:<seq>`, seq 0 is `meta`), so a
later Last-Event-ID resumption can key a replay buffer on exactly these ids.
Every stream ends with one `done` or one `error` event, unless the client left
first; then the generator is cancelled, and `closing_upstream` closes the
provider's HTTP response so generation (and billing) stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from sse_starlette import ServerSentEvent

from qa_service import events
from qa_service.errors import UpstreamIncompleteError, classify_failure, upstream_status
from qa_service.events import AnswerMeta, AnswerSummary
from qa_service.upstream import closing_upstream
from qa_service.writer import AIWriter, GenerationReport

log = logging.getLogger("qa_service.answers")


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    question: str
    prompt: str
    configurable: Mapping[str, Any]


class Answer:
    """Identity, event numbering and tallies of one answer."""

    def __init__(self, meta: AnswerMeta) -> None:
        self.meta = meta
        self.id = meta.request_id
        self.started = time.perf_counter()
        self.ttft_ms: float | None = None
        self.chars = 0
        self.pieces = 0
        self.outcome = "client_disconnected"
        self.error_code: str | None = None
        self._seq = 0

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 1)

    def meta_event(self) -> ServerSentEvent:
        return events.meta(self.id, self._next_seq(), self.meta)

    def text_event(self, chunk: str) -> ServerSentEvent:
        if self.ttft_ms is None:
            self.ttft_ms = self.elapsed_ms()
        self.chars += len(chunk)
        self.pieces += 1
        return events.text(self.id, self._next_seq(), chunk)

    def done_event(self, report: GenerationReport) -> ServerSentEvent:
        self.outcome = "complete"
        summary = AnswerSummary(
            finish_reason=report.finish_reason,
            usage=report.usage,
            ttft_ms=self.ttft_ms,
            chars=self.chars,
            duration_ms=self.elapsed_ms(),
        )
        return events.done(self.id, self._next_seq(), summary)

    def error_event(self, exc: Exception) -> ServerSentEvent:
        public = classify_failure(exc)
        self.outcome = "error"
        self.error_code = public.code
        # Type and status only: provider error bodies can echo the API key.
        log.warning(
            "answer failed request_id=%s code=%s exception=%s upstream_status=%s after_pieces=%d",
            self.id,
            public.code,
            type(exc).__name__,
            upstream_status(exc),
            self.pieces,
        )
        return events.error(self.id, self._next_seq(), public)


async def answer_events(
    answer: Answer,
    writer: AIWriter,
    request: AnswerRequest,
    upstream_close_timeout: float,
) -> AsyncGenerator[ServerSentEvent]:
    """The whole event stream of one answer: meta, text..., then done or error."""
    yield answer.meta_event()
    report = GenerationReport()
    try:
        async with closing_upstream(upstream_close_timeout):
            texts = writer.stream(
                request.question,
                prompt=request.prompt,
                report=report,
                configurable=request.configurable,
            )
            async with aclosing(texts):
                async for chunk in texts:
                    yield answer.text_event(chunk)
        if report.finish_reason is None:
            raise UpstreamIncompleteError
    # Exception, never BaseException: cancellation must pass through untouched.
    except Exception as exc:  # noqa: BLE001 - every failure becomes an error event
        yield answer.error_event(exc)
    else:
        yield answer.done_event(report)
    finally:
        _log_answer(answer, report)


def _log_answer(answer: Answer, report: GenerationReport) -> None:
    usage = report.usage or {}
    log.info(
        "answer request_id=%s provider=%s model=%s prompt=%s outcome=%s code=%s "
        "pieces=%d chars=%d ttft_ms=%s duration_ms=%s input_tokens=%s output_tokens=%s",
        answer.id,
        answer.meta.provider,
        answer.meta.model,
        answer.meta.prompt,
        answer.outcome,
        answer.error_code or "-",
        answer.pieces,
        answer.chars,
        answer.ttft_ms,
        answer.elapsed_ms(),
        usage.get("input_tokens", "-"),
        usage.get("output_tokens", "-"),
    )
