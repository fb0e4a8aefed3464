"""A GenAI client span for every provider call, as OpenTelemetry's GenAI conventions name it.

One answer is one chat model run, or two when the primary fails before any
text and the fallback answers (providers.py with_fallback): each run is a
span `chat <model>` of kind CLIENT, a child of the answer's span, with the
conventions' `gen_ai.*` attributes, an event at its first token, an event for
each retry of its HTTP request, and an error status with `error.type` when it
fails. A fallback's span says so (`qa.fallback`).

The provider's HTTP request carries the span as `traceparent` (upstream.py's
request hook calls `propagate`), so a provider or proxy that traces joins the
same trace.

Tracing is off unless OTEL_* configures it (observability/tracing.py turns
this on); off, no handler is made and the hook does nothing. No question or
answer text goes into a span unless OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
is true, and then through the same redaction as the logs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

if TYPE_CHECKING:  # report.py's failures.py imports upstream.py, which imports this
    from qa_service.generation.report import GenerationReport

TRACER_NAME = "qa_service"
# The span's attributes its metrics carry too (the conventions' metric attributes).
_METRIC_ATTRIBUTES = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")


# The conventions' buckets (semantic-conventions gen-ai-metrics.md).
TOKEN_BUCKETS = [4**power for power in range(14)]
DURATION_BUCKETS = [0.01 * 2**power for power in range(14)]


class CallMetrics:
    """The GenAI conventions' client metrics, one data point set per provider call."""

    def __init__(self) -> None:
        meter = metrics.get_meter(TRACER_NAME)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used by a provider call, input and output.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="How long a provider call took, to its last token or its failure.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="From a provider call's start to its first text.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )


@dataclass(slots=True)
class CallTracing:
    """Whether provider calls are traced, and how: set once at start-up."""

    on: bool = False
    capture_content: bool = False
    # The logs' redaction (observability/logs.py), for captured content.
    redact: Callable[[str], str] = field(default=lambda text: text)
    metrics: CallMetrics | None = None


# Set by observability/tracing.py when OTEL_* turns tracing on.
CALL_TRACING = CallTracing()


@dataclass(slots=True)
class _Call:
    span: Span
    # The conventions' metric attributes: the operation, provider and model asked.
    attributes: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    attempts: int = 0
    first_token: bool = False


# The provider call the current task is making: its HTTP requests carry its span.
_current_call: ContextVar[_Call | None] = ContextVar("qa_current_call", default=None)


def propagate_call(request: httpx.Request) -> None:
    """An HTTP request hook: the provider's request carries its call's span as
    `traceparent`; a second request of the same call is a retry, and its span says so."""
    call = _current_call.get()
    if call is None:
        return
    call.attempts += 1
    if call.attempts > 1:
        call.span.add_event("gen_ai.retry", {"qa.attempt": call.attempts})
    propagate.inject(request.headers, context=trace.set_span_in_context(call.span))


class CallSpans(AsyncCallbackHandler):
    """The spans of one answer's provider calls, from the chat model runs' callbacks.

    Listed after the answer's ReportHandler, which reads usage and finish
    reasons first: each span takes them from its report when its run ends.
    """

    # Awaited in line, in the task of the model's stream: the context variable
    # set at a run's start is what that run's HTTP requests see (report.py says
    # why in line matters for the cost too).
    run_inline = True

    def __init__(
        self, report: GenerationReport, max_tokens: int | None, temperature: float | None
    ) -> None:
        self._report = report
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._tracer = trace.get_tracer(TRACER_NAME)
        self._calls: dict[UUID, _Call] = {}
        # The call started last: the one whose stream the first text comes from.
        self._latest: _Call | None = None
        self._failed = False

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metadata = metadata or {}
        provider = metadata.get("ls_provider") or "unknown"
        model = metadata.get("ls_model_name") or "unknown"
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "qa.fallback": self._failed,
        }
        if self._max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = self._max_tokens
        if self._temperature is not None:
            attributes["gen_ai.request.temperature"] = self._temperature
        if CALL_TRACING.capture_content:
            attributes["gen_ai.input.messages"] = _content(messages[0] if messages else [])
        span = self._tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)
        measured = {name: attributes[name] for name in _METRIC_ATTRIBUTES}
        call = self._calls[run_id] = self._latest = _Call(span, measured)
        _current_call.set(call)

    def first_text(self) -> None:
        """The answer's first text came: its call's event and first-chunk time.
        Called by the writer, once; a per-token callback would cost every token
        a dispatch through LangChain's callback manager for this alone."""
        call = self._latest
        if call is not None and not call.first_token:
            call.first_token = True
            call.span.add_event("gen_ai.first_token")
            if CALL_TRACING.metrics is not None:
                waited = time.perf_counter() - call.started
                CALL_TRACING.metrics.first_chunk.record(waited, call.attributes)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        call = self._calls.pop(run_id, None)
        if call is None:
            return
        report = self._report
        span = call.span
        if report.model is not None:
            span.set_attribute("gen_ai.response.model", report.model)
            call.attributes["gen_ai.response.model"] = report.model
        if report.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", report.usage["input_tokens"])
            span.set_attribute("gen_ai.usage.output_tokens", report.usage["output_tokens"])
        _measure(call, report.usage)
        if report.finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [report.finish_reason])
        if CALL_TRACING.capture_content and response.generations and response.generations[0]:
            output = _message(
                "assistant", response.generations[0][0].text, finish_reason=report.finish_reason
            )
            span.set_attribute("gen_ai.output.messages", json.dumps([output], ensure_ascii=False))
        span.end()

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        call = self._calls.pop(run_id, None)
        if call is None:
            return
        self._failed = True
        # The type only: a provider's error text can echo the key (report.py).
        kind = "cancelled" if isinstance(error, asyncio.CancelledError) else type(error).__name__
        _end_failed(call, kind)

    def close(self) -> None:
        """End the spans of runs that never ended: a cancel stops the stream
        without an end or error callback (a hang-up, a timeout, a shutdown)."""
        for call in self._calls.values():
            _end_failed(call, "cancelled")
        self._calls.clear()


def _end_failed(call: _Call, kind: str) -> None:
    call.span.set_attribute("error.type", kind)
    call.span.set_status(Status(StatusCode.ERROR, kind))
    call.span.end()
    call.attributes["error.type"] = kind
    _measure(call, None)


def _measure(call: _Call, usage: dict[str, int] | None) -> None:
    """The call's GenAI metrics, as it ends."""
    recorded = CALL_TRACING.metrics
    if recorded is None:
        return
    recorded.duration.record(time.perf_counter() - call.started, call.attributes)
    if usage is not None:
        for kind in ("input", "output"):
            tokens = usage[f"{kind}_tokens"]
            recorded.token_usage.record(tokens, {**call.attributes, "gen_ai.token.type": kind})


def _content(messages: list[BaseMessage]) -> str:
    """The input messages in the conventions' shape, each text through the logs' redaction."""
    return json.dumps(
        [
            _message(_ROLES.get(message.type, message.type), str(message.content))
            for message in messages
        ],
        ensure_ascii=False,
    )


def _message(role: str, text: str, **more: Any) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": CALL_TRACING.redact(text)}], **more}


# LangChain's message types, as the conventions name the roles.
_ROLES = {"human": "user", "ai": "assistant", "system": "system"}
