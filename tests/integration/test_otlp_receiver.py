"""The test receiver decodes what the real OpenTelemetry SDK exporter sends.

The tracing tests trust tests/support/otlp_receiver.py to tell them what a
collector would see; here the SDK's own OTLP/HTTP exporters, in this process,
send it spans and metrics (plain, gzip- and deflate-compressed), and each
decoded field is checked against what was emitted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from tests.support.otlp_receiver import (
    METRICS_PATH,
    TRACES_PATH,
    OTLPReceiver,
    down_endpoint,
    run_receiver,
)

RESOURCE = Resource.create({"service.name": "receiver-check", "deployment.environment": "test"})
# One of each kind an attribute can be.
CHAT_ATTRIBUTES: dict[str, AttributeValue] = {
    "gen_ai.request.model": "stub-model",
    "gen_ai.usage.input_tokens": 21,
    "gen_ai.request.temperature": 0.5,
    "qa.cache_hit": False,
    "gen_ai.response.finish_reasons": ["stop", "length"],
}
# Longer than any test: metrics go out on force_flush only, once each.
NEVER = 3_600_000


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with run_receiver() as receiver:
        yield receiver


@pytest.mark.parametrize(
    "compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate]
)
def test_spans_from_the_sdk_exporter_decode_field_by_field(
    receiver: OTLPReceiver, compression: Compression
) -> None:
    exporter = OTLPSpanExporter(
        endpoint=f"{receiver.endpoint}{TRACES_PATH}", compression=compression, timeout=10
    )
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("receiver.check", "1.0")
    try:
        with tracer.start_as_current_span("earlier answer") as earlier:
            pass
        links = [Link(earlier.get_span_context(), {"link.reason": "resume"})]
        with (
            tracer.start_as_current_span("POST /v1/chat/completions", kind=SpanKind.SERVER),
            tracer.start_as_current_span(
                "chat stub-model", kind=SpanKind.CLIENT, links=links, attributes=CHAT_ATTRIBUTES
            ) as client,
        ):
            client.add_event("gen_ai.first_token", {"qa.chunk": 1})
            client.set_status(Status(StatusCode.ERROR, "upstream_timeout"))
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()

    spans = {s.name: s for s in receiver.wait_for_spans(lambda spans: len(spans) == 3)}
    server, chat, before = (
        spans["POST /v1/chat/completions"],
        spans["chat stub-model"],
        spans["earlier answer"],
    )
    context = client.get_span_context()
    assert chat.trace_id == f"{context.trace_id:032x}" == server.trace_id
    assert chat.span_id == f"{context.span_id:016x}"
    assert chat.parent_span_id == server.span_id
    assert server.parent_span_id is None
    assert (server.kind, chat.kind, before.kind) == ("SERVER", "CLIENT", "INTERNAL")
    assert chat.attributes == CHAT_ATTRIBUTES
    first_token = chat.event("gen_ai.first_token")
    assert first_token.attributes == {"qa.chunk": 1}
    assert chat.start_ns <= first_token.time_ns <= chat.end_ns
    (link,) = chat.links
    assert (link.trace_id, link.span_id) == (before.trace_id, before.span_id)
    assert link.attributes == {"link.reason": "resume"}
    assert (chat.status_code, chat.status_description) == ("ERROR", "upstream_timeout")
    assert server.status_code == "UNSET"
    assert chat.resource["service.name"] == "receiver-check"
    assert chat.resource["deployment.environment"] == "test"
    assert chat.scope == "receiver.check"
    assert server.start_ns <= chat.start_ns <= chat.end_ns <= server.end_ns

    (export,) = receiver.exports(TRACES_PATH)
    assert export.headers.get("content-type") == "application/x-protobuf"
    assert export.headers.get("content-encoding") == _encoding(compression)
    assert b"upstream_timeout" in receiver.raw_bytes()  # decompressed, searchable


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_metrics_from_the_sdk_exporter_decode_with_their_points(
    receiver: OTLPReceiver, compression: Compression
) -> None:
    exporter = OTLPMetricExporter(
        endpoint=f"{receiver.endpoint}{METRICS_PATH}", compression=compression, timeout=10
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=NEVER)
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    meter = provider.get_meter("receiver.check")
    try:
        duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            explicit_bucket_boundaries_advisory=[0.1, 1.0, 10.0],
        )
        tokens = meter.create_counter("qa.tokens", unit="{token}")
        chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "stub-model"}
        for seconds in (0.05, 0.5, 0.7, 20.0):
            duration.record(seconds, chat)
        tokens.add(21, {"gen_ai.token.type": "input"})
        tokens.add(4, {"gen_ai.token.type": "output"})
        tokens.add(3, {"gen_ai.token.type": "output"})
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()

    histogram = receiver.wait_for_metric("gen_ai.client.operation.duration")
    assert (histogram.kind, histogram.unit, histogram.scope) == ("histogram", "s", "receiver.check")
    (point,) = histogram.points
    assert point.attributes == chat
    assert point.explicit_bounds == [0.1, 1.0, 10.0]
    assert point.bucket_counts == [1, 2, 0, 1]
    assert point.count == 4
    assert point.sum == pytest.approx(21.25)
    assert (point.min, point.max) == (0.05, 20.0)
    assert histogram.resource["service.name"] == "receiver-check"

    counter = receiver.wait_for_metric("qa.tokens")
    assert counter.kind == "sum"
    by_type = {p.attributes["gen_ai.token.type"]: p.value for p in counter.points}
    assert by_type == {"input": 21, "output": 7}
    assert {e.headers.get("content-encoding") for e in receiver.exports(METRICS_PATH)} == {
        _encoding(compression)
    }


def test_a_hanging_receiver_keeps_the_request_and_times_the_exporter_out(
    receiver: OTLPReceiver,
) -> None:
    receiver.answer_delay = 30.0
    assert _export_one_span("held", receiver.endpoint) is SpanExportResult.FAILURE
    assert receiver.wait_for_span("held").kind == "INTERNAL"


def test_a_down_endpoint_refuses_the_exporter() -> None:
    assert _export_one_span("lost", down_endpoint()) is SpanExportResult.FAILURE


def _export_one_span(name: str, endpoint: str) -> SpanExportResult:
    """One span through the exporter itself, not a processor, for the exporter's own verdict."""
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}{TRACES_PATH}", timeout=1)
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    try:
        span = provider.get_tracer("receiver.check").start_span(name)
        span.end()
        return exporter.export([span])  # type: ignore[list-item]
    finally:
        exporter.shutdown()
        provider.shutdown()


def _encoding(compression: Compression) -> str | None:
    return {Compression.Gzip: "gzip", Compression.Deflate: "deflate"}.get(compression)
