"""OpenTelemetry: traces and GenAI metrics over OTLP, off unless OTEL_* configures them.

On when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is
set, or OTEL_TRACES_EXPORTER=otlp; off with OTEL_SDK_DISABLED=true or
OTEL_TRACES_EXPORTER=none. Everything else is the SDK's own reading of the
standard variables: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the
resource), OTEL_TRACES_SAMPLER and its argument, OTEL_EXPORTER_OTLP_HEADERS,
_TIMEOUT, _COMPRESSION, OTEL_BSP_* (the batch), OTEL_METRIC_EXPORT_INTERVAL.
OTEL_EXPORTER_OTLP_PROTOCOL is http/protobuf, the default; grpc needs the
grpc exporter package, which the image does not ship, and is refused at
start-up rather than ignored.

What is traced (docs/operations.md, "Tracing"): a server span per request
(the ASGI instrumentation, continuing the caller's traceparent), admission and
the first-text hold within it, an answer span in the answer's own task, and a
GenAI client span per provider call (generation/call_spans.py) whose HTTP
request carries traceparent. Spans are exported from a background thread in
batches: a collector that is down or slow never waits an answer. Spans that
could not be exported are counted in `qa_otel_spans_dropped_total`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context, metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qa_service.answers.model import AnswerRecord, answer_ref
from qa_service.config import ConfigError
from qa_service.core.events import AnswerMeta, CacheOutcome
from qa_service.generation.call_spans import CALL_TRACING, TRACER_NAME, CallMetrics
from qa_service.observability.logs import refer_to_answers

log = logging.getLogger(__name__)

SERVICE_NAME = "qa-service"
# Each may name the protocol; every one must be what this build sends.
_PROTOCOL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
)
# Probes and scrapes, every few seconds from every instance: no span each,
# unless OTEL_PYTHON_ASGI_EXCLUDED_URLS (or OTEL_PYTHON_EXCLUDED_URLS) says otherwise.
_UNTRACED_PATHS = "healthz,readyz,metrics"
# How long shutdown waits for the last spans to leave: a SIGTERM's drain must
# not wait on a collector that is down.
SHUTDOWN_SECONDS = 2.0


class TracingConfigError(ConfigError):
    """OTEL_* asks for what this build cannot do."""


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Whether OTEL_* turns tracing on (the module docstring says how)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(endpoint) or exporter == "otlp"


class SafeSpanExporter(SpanExporter):
    """The OTLP exporter, behind two rules of the logs'.

    An exception's text never leaves: an instrumentation that records one (the
    ASGI middleware does, for an unhandled error) keeps its type, not its
    message or stack, which can hold a provider's error body and so the key.
    And the spans whose export failed are counted: they are dropped.
    """

    def __init__(self, inner: SpanExporter, on_dropped: Callable[[int], None]) -> None:
        self._inner = inner
        self._on_dropped = on_dropped

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export([_without_exception_text(span) for span in spans])
        if result is not SpanExportResult.SUCCESS:
            self._on_dropped(len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _without_exception_text(span: ReadableSpan) -> ReadableSpan:
    if span.status.description is None and not any(e.name == "exception" for e in span.events):
        return span
    events = [
        Event("exception", {"exception.type": e.attributes.get("exception.type", "")}, e.timestamp)
        if e.name == "exception" and e.attributes is not None
        else e
        for e in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class Tracing:
    """The process's tracer and meter providers, once OTEL_* turned them on."""

    def __init__(
        self,
        environ: Mapping[str, str],
        on_dropped: Callable[[int], None],
        redact: Callable[[str], str],
    ) -> None:
        for variable in _PROTOCOL_VARIABLES:
            protocol = environ.get(variable, "http/protobuf").strip()
            if protocol != "http/protobuf":
                raise TracingConfigError(f"{variable}={protocol!r}: only http/protobuf is built in")
        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        # Metrics first: the span processor and exporter report their own
        # (otel.sdk.processor.span.processed, with error.type queue_full) to it.
        self.meter_provider: MeterProvider | None = None
        if environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() != "none":
            reader = PeriodicExportingMetricReader(OTLPMetricExporter())
            # Our own shutdown bounds it (shutdown below); the SDK's at exit would not.
            self.meter_provider = MeterProvider(
                resource=resource, metric_readers=[reader], shutdown_on_exit=False
            )
            metrics.set_meter_provider(self.meter_provider)
        # The sampler is the SDK's reading of OTEL_TRACES_SAMPLER (parentbased_always_on).
        self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        exporter = SafeSpanExporter(OTLPSpanExporter(), on_dropped)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(self.tracer_provider)
        capture = environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
        CALL_TRACING.capture_content = capture.strip().lower() == "true"
        CALL_TRACING.redact = redact
        CALL_TRACING.metrics = CallMetrics()
        CALL_TRACING.on = True

    def shutdown(self) -> None:
        """Send what is left, for at most SHUTDOWN_SECONDS, from a thread of its own:
        the SDK's shutdown waits on its exporter, which waits on the collector."""

        CALL_TRACING.on = False
        senders = [threading.Thread(target=self.tracer_provider.shutdown, daemon=True)]
        if self.meter_provider is not None:
            senders.append(threading.Thread(target=self.meter_provider.shutdown, daemon=True))
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(max(0.0, deadline - time.monotonic()))
        if any(sender.is_alive() for sender in senders):
            # Daemon threads: the process exits without them.
            log.warning("the OTLP collector took too long; the last spans are dropped")


def phase(name: str) -> AbstractContextManager[object]:
    """A span for one phase of a request (admission, the first-text hold), current
    while it lasts; nothing at all with tracing off."""
    if not CALL_TRACING.on:
        return nullcontext()
    # An exception's type is the request's own span's to say; never its text here.
    return trace.get_tracer(TRACER_NAME).start_as_current_span(
        name, record_exception=False, set_status_on_exception=False
    )


class TracedRequests:
    """The ASGI instrumentation's server span, shown each request as a log line
    would show it: its query string left out (a GET /ai_write's is the question),
    and ids in its path as their references (a resume's answer id, a response's
    id: each reads an answer). The app itself gets the request untouched."""

    def __init__(self, app: ASGIApp, /, **instrumentation: Any) -> None:
        self._app = app
        excluded = os.environ.get("OTEL_PYTHON_ASGI_EXCLUDED_URLS") or os.environ.get(
            "OTEL_PYTHON_EXCLUDED_URLS", _UNTRACED_PATHS
        )
        self._traced = OpenTelemetryMiddleware(
            self._untouched,
            excluded_urls=excluded,
            # Named by the method until the route is known (then `GET /ai_write`):
            # a path with an id in it would make every request's name its own.
            default_span_details=lambda scope: (scope.get("method") or "HTTP", {}),
            **instrumentation,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        shown = {
            **scope,
            "path": _referred(scope["path"]),
            "raw_path": None,
            "query_string": b"",
            _ORIGINAL: scope,
        }
        await self._traced(shown, receive, send)

    async def _untouched(self, scope: Scope, receive: Receive, send: Send) -> None:
        original = scope[_ORIGINAL]
        span = trace.get_current_span()

        async def named_send(message: Message) -> None:
            # At the response's start, when the route is known and the span still
            # open (the instrumentation ends it with the response's last byte).
            if message["type"] == "http.response.start":
                route = getattr(original.get("route"), "path", None)
                if route is not None:
                    span.update_name(f"{original.get('method', 'HTTP')} {route}")
                    span.set_attribute("http.route", route)
            await send(message)

        await self._app(original, receive, named_send)


# Where the scope the instrumentation sees keeps the request's own.
_ORIGINAL = "qa.original_scope"
_RESPONSE_PATH = re.compile(r"/v1/responses/(resp_[0-9a-f]{48})")


def _referred(path: str) -> str:
    path = refer_to_answers(path)
    if "/v1/responses/" not in path:
        return path
    return _RESPONSE_PATH.sub(lambda m: f"/v1/responses/ref:{answer_ref(m[1])}", path)


def name_request(request_id: str) -> None:
    """The request's server span carries its request id (X-Request-ID), as its log lines do."""
    if CALL_TRACING.on:
        trace.get_current_span().set_attribute("qa.request_id", request_id)


def open_tracing(
    on_dropped: Callable[[int], None],
    redact: Callable[[str], str],
    environ: Mapping[str, str] | None = None,
) -> Tracing | None:
    """Tracing for this process, or None when OTEL_* does not ask for it.

    `on_dropped` counts the spans the exporter drops; `redact` is the logs'
    redaction, for messages captured into spans."""
    environ = os.environ if environ is None else environ
    if not tracing_requested(environ):
        return None
    return Tracing(environ, on_dropped, redact)


class AnswerSpans:
    """An answer's span, from its start to its end, in the answer's own task, and
    the answers in flight. An AnswerObserver (answers/model.py); the provider
    calls' spans and GenAI metrics are generation/call_spans.py's.

    The span is made the current one in the answer's task, so the provider
    calls' spans (generation/call_spans.py) are its children, and it is the
    child of the request that started the answer. A resume or a cancel from
    another request links to it (`link`), on the replica that runs it.
    """

    def __init__(self) -> None:
        self._tracer = trace.get_tracer(TRACER_NAME)
        meter = metrics.get_meter(TRACER_NAME)
        self._active = meter.create_up_down_counter(
            "qa.answers.active", unit="{answer}", description="Answers generating now."
        )
        self._open: dict[str, tuple[Span, object]] = {}

    def answer_started(self, meta: AnswerMeta) -> None:
        attributes: dict[str, Any] = {
            "qa.answer_ref": answer_ref(meta.answer_id),
            "qa.request_id": meta.request_id,
            "qa.prompt": meta.prompt,
        }
        if meta.prompt_version is not None:
            attributes["qa.prompt_version"] = meta.prompt_version
        if meta.cache is not None:
            attributes["qa.cache"] = meta.cache
        span = self._tracer.start_span("qa.answer", attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        self._open[answer_ref(meta.answer_id)] = (span, token)
        if meta.cache != CacheOutcome.SOURCE:
            self._active.add(1, {"qa.prompt": meta.prompt})

    def answer_finished(self, record: AnswerRecord) -> None:
        opened = self._open.pop(record.answer_ref, None)
        if opened is not None:
            span, token = opened
            _describe(span, record)
            span.end()
            # In the answer's own task, which attached it: nothing else to restore.
            context.detach(token)  # type: ignore[arg-type]
        if record.cache != CacheOutcome.SOURCE:
            self._active.add(-1, {"qa.prompt": record.prompt})

    def producer_lost(self) -> None:
        pass

    def link(self, answer_id: str, why: str) -> None:
        """A resume or a cancel of the answer, from another request: an event on
        the answer's span, and a link from the request's span to it, when this
        replica runs the answer (one elsewhere has its span there)."""
        opened = self._open.get(answer_ref(answer_id))
        if opened is not None:
            answer_span = opened[0]
            answer_span.add_event(f"qa.{why}")
            trace.get_current_span().add_link(answer_span.get_span_context(), {"qa.link": why})


def _describe(span: Span, record: AnswerRecord) -> None:
    """How the answer went, on its span: the fields of its log line, never its text."""
    values = {
        "qa.outcome": record.outcome,
        "qa.error_code": record.error_code,
        "qa.upstream_status": record.upstream_status,
        "qa.fallback": record.fallback,
        "qa.pieces": record.pieces,
        "qa.chars": record.chars,
        "qa.ttft_ms": record.ttft_ms,
        "gen_ai.provider.name": record.answered_provider,
        "gen_ai.response.model": record.answered_model,
        "gen_ai.usage.input_tokens": record.input_tokens,
        "gen_ai.usage.output_tokens": record.output_tokens,
        "gen_ai.response.finish_reasons": [record.finish_reason] if record.finish_reason else None,
    }
    span.set_attributes({name: value for name, value in values.items() if value is not None})
    if record.outcome == "error":
        span.set_status(Status(StatusCode.ERROR, record.error_code or "error"))
