"""A loopback OTLP/HTTP receiver: what a collector would get from the service, decoded.

It speaks the protocol the service exports with (http/protobuf, the SDK's
default): POST /v1/traces, /v1/metrics and /v1/logs, each body a protobuf
Export*ServiceRequest, gzip- or deflate-compressed when the exporter was told
to (OTEL_EXPORTER_OTLP_COMPRESSION), answered 200 with the empty
Export*ServiceResponse the exporter expects. Every body is kept as it came,
decompressed, so a privacy test can search all of it (`raw_bytes`); spans and
metrics are also kept as small dataclasses with plain values, so a test reads
`span.attributes["gen_ai.request.model"]` rather than walking protobuf.

Two failure modes for the exporter's side of the story: `down_endpoint()` is
an address nothing listens on (a collector that is down), and
`answer_delay` makes the receiver take a request and sit on it (a collector
that hangs), to show that neither slows an answer.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support.daemon import wait_until
from tests.support.ports import free_port

TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
LOGS_PATH = "/v1/logs"

# Each signal's request (to decode) and the empty response the exporter expects back.
_MESSAGES: dict[str, tuple[type[Message], type[Message]]] = {
    TRACES_PATH: (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    METRICS_PATH: (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    LOGS_PATH: (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}

Attributes = dict[str, Any]


@dataclass(frozen=True)
class SpanEvent:
    name: str
    attributes: Attributes
    time_ns: int


@dataclass(frozen=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: Attributes


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as a collector got it; ids in lowercase hex, as `traceparent` writes them."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # "SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER"
    attributes: Attributes
    events: list[SpanEvent]
    links: list[SpanLink]
    status_code: str  # "UNSET", "OK", "ERROR"
    status_description: str
    start_ns: int
    end_ns: int
    resource: Attributes
    scope: str

    def event(self, name: str) -> SpanEvent:
        """The span's one event called `name`."""
        (found,) = [e for e in self.events if e.name == name]
        return found


@dataclass(frozen=True)
class MetricPoint:
    """One data point. Sums and gauges fill `value`; histograms the rest."""

    attributes: Attributes
    value: int | float | None = None
    count: int | None = None
    sum: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class ReceivedMetric:
    """One metric of one export; a periodic reader sends each metric again every time."""

    name: str
    kind: str  # "sum", "gauge", "histogram", "exponential_histogram", "summary"
    unit: str
    description: str
    points: list[MetricPoint]
    resource: Attributes
    scope: str


@dataclass(frozen=True)
class Export:
    """One POST as it arrived: its path, headers (names lowercased) and decompressed body."""

    path: str
    headers: dict[str, str]
    body: bytes


class OTLPReceiver:
    """Run with `start()` in a thread of its own (or `run_receiver()`); `endpoint` is
    what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exports: list[Export] = []
        self._spans: list[ReceivedSpan] = []
        self._metrics: list[ReceivedMetric] = []
        self._stopping = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # A collector that hangs: each request is kept at once, and answered this
        # many seconds later (or when the receiver stops).
        self.answer_delay = 0.0
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(_Handler):
            owner = receiver

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        # A hanging answer must not hold up stop().
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def exports(self, path: str | None = None) -> list[Export]:
        with self._lock:
            return [e for e in self._exports if path in (None, e.path)]

    def raw_bytes(self) -> bytes:
        """Every body received so far, decompressed, end to end: what a privacy check searches."""
        return b"".join(e.body for e in self.exports())

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def metrics(self, name: str | None = None) -> list[ReceivedMetric]:
        """Every metric of every export so far (`name`'s only), oldest first."""
        with self._lock:
            return [m for m in self._metrics if name in (None, m.name)]

    def wait_for_spans(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """All spans received, once `predicate` holds for them."""

        def holds() -> tuple[list[ReceivedSpan]] | None:
            # In a tuple: an empty list may be what the predicate wanted.
            spans = self.spans()
            return (spans,) if predicate(spans) else None

        (spans,) = wait_until(
            holds,
            timeout,
            "the spans awaited",
            describe=lambda: "\n".join(f"{s.kind} {s.name}" for s in self.spans()),
        )
        return spans

    def wait_for_span(self, name: str, timeout: float = 10.0) -> ReceivedSpan:
        """The first span called `name`, once it has arrived."""
        spans = self.wait_for_spans(lambda spans: any(s.name == name for s in spans), timeout)
        return next(s for s in spans if s.name == name)

    def wait_for_metric(self, name: str, timeout: float = 10.0) -> ReceivedMetric:
        """The latest export of metric `name`, once one has arrived."""
        wait_until(
            lambda: self.metrics(name),
            timeout,
            f"metric {name}",
            describe=lambda: ", ".join(sorted({m.name for m in self.metrics()})),
        )
        return self.metrics(name)[-1]

    def _keep(self, path: str, headers: dict[str, str], body: bytes) -> None:
        """Record one export; raises DecodeError for a body that is not the signal's request."""
        request_type, _ = _MESSAGES[path]
        request = request_type.FromString(body)
        spans = _spans_of(request) if path == TRACES_PATH else []
        metrics = _metrics_of(request) if path == METRICS_PATH else []
        with self._lock:
            self._exports.append(Export(path, headers, body))
            self._spans.extend(spans)
            self._metrics.extend(metrics)


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: OTLPReceiver
    # HTTP/1.1: the exporter keeps its connection, as it would with a collector.
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        messages = _MESSAGES.get(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if messages is None:
            self._answer(404, b"", "text/plain")
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            body = _decompress(body, headers.get("content-encoding", ""))
            self.owner._keep(self.path, headers, body)
        except (OSError, zlib.error, DecodeError):
            # OTLP/HTTP: a malformed request is a 400, which the exporter does not retry.
            self._answer(400, b"", "text/plain")
            return
        if self.owner.answer_delay:
            self.owner._stopping.wait(self.owner.answer_delay)
        _, response_type = messages
        self._answer(200, response_type().SerializeToString(), "application/x-protobuf")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        # An exporter that timed out on a held request has left: nobody to answer.
        with contextlib.suppress(ConnectionError):
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def run_receiver() -> Iterator[OTLPReceiver]:
    """A started receiver, stopped afterwards."""
    receiver = OTLPReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def down_endpoint() -> str:
    """An OTLP endpoint where nothing listens: a collector that is down.

    ports.py does not hand the port out again before its band has gone round,
    so nothing of this test session starts listening there meanwhile.
    """
    return f"http://127.0.0.1:{free_port()}"


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _spans_of(request: Any) -> list[ReceivedSpan]:
    found = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(_span(span, resource, scope_spans.scope.name))
    return found


def _span(span: trace_pb2.Span, resource: Attributes, scope: str) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() or None,
        name=span.name,
        kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        attributes=_attributes(span.attributes),
        events=[
            SpanEvent(e.name, _attributes(e.attributes), e.time_unix_nano) for e in span.events
        ],
        links=[
            SpanLink(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
            for link in span.links
        ],
        status_code=trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        status_description=span.status.message,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        resource=resource,
        scope=scope,
    )


def _metrics_of(request: Any) -> list[ReceivedMetric]:
    found = []
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data") or ""
                found.append(
                    ReceivedMetric(
                        name=metric.name,
                        kind=kind,
                        unit=metric.unit,
                        description=metric.description,
                        points=[_point(kind, p) for p in getattr(metric, kind).data_points]
                        if kind
                        else [],
                        resource=resource,
                        scope=scope_metrics.scope.name,
                    )
                )
    return found


def _point(kind: str, point: Any) -> MetricPoint:
    attributes = _attributes(point.attributes)
    if kind in ("sum", "gauge"):
        number: metrics_pb2.NumberDataPoint = point
        value_field = number.WhichOneof("value")
        return MetricPoint(attributes, value=getattr(number, value_field) if value_field else None)
    if kind == "histogram":
        histogram: metrics_pb2.HistogramDataPoint = point
        return MetricPoint(
            attributes,
            count=histogram.count,
            sum=histogram.sum if histogram.HasField("sum") else None,
            bucket_counts=list(histogram.bucket_counts),
            explicit_bounds=list(histogram.explicit_bounds),
            min=histogram.min if histogram.HasField("min") else None,
            max=histogram.max if histogram.HasField("max") else None,
        )
    # Exponential histograms and summaries: the count and sum, which is all a test reads so far.
    return MetricPoint(attributes, count=point.count, sum=point.sum)


def _attributes(pairs: Any) -> Attributes:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    match value.WhichOneof("value"):
        case "string_value":
            return value.string_value
        case "bool_value":
            return value.bool_value
        case "int_value":
            return value.int_value
        case "double_value":
            return value.double_value
        case "bytes_value":
            return value.bytes_value
        case "array_value":
            return [_value(v) for v in value.array_value.values]
        case "kvlist_value":
            return _attributes(value.kvlist_value.values)
        case _:
            return None
