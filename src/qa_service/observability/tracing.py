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
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from qa_service.config import ConfigError
from qa_service.generation.call_spans import CALL_TRACING, CallMetrics

log = logging.getLogger(__name__)

SERVICE_NAME = "qa-service"
# Each may name the protocol; every one must be what this build sends.
_PROTOCOL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
)
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
