"""OpenTelemetry over OTLP, as a collector sees it: the real SDK exporter in the
service, a real OTLP/HTTP receiver on 127.0.0.1 (tests/support/otlp_receiver.py),
and the provider stub, which records the `traceparent` it is sent."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.daemon import wait_until
from tests.support.metrics import read_metrics, total
from tests.support.otlp_receiver import OTLPReceiver, ReceivedSpan, down_endpoint, run_receiver
from tests.support.providers import GROQ_KEY, OPENAI_KEY, marker, provider_settings
from tests.support.service import RunningService, run_service
from tests.support.sse import read_stream
from tests.support.upstream_stub import GROQ_PATH, OPENAI_PATH, Reply, UpstreamStub

USAGE = {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38}
PIECES = ["Photosynthesis ", "turns light ", "into sugar."]
# Batches every 100 ms, metrics every half second: the tests wait less.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "500"}


def _otel(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "qa-under-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        **FAST_EXPORT,
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with run_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced(receiver: OTLPReceiver, stub: UpstreamStub, workdir: Path) -> Iterator[RunningService]:
    settings = {
        **provider_settings("openai", stub),
        **_otel(receiver.endpoint),
        "QA_FALLBACK_PROVIDER": "groq",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": stub.url,
        "QA_UPSTREAM_READ_TIMEOUT_SECONDS": "1",
        # One retry of a provider error before the fallback: its span says so.
        "QA_UPSTREAM_MAX_RETRIES": "1",
        "QA_MAX_TOKENS": "500",
    }
    with run_service(settings, workdir) as service:
        yield service


def _caller() -> tuple[str, str, str]:
    """A caller's trace id, span id, and its W3C traceparent."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def _trace(receiver: OTLPReceiver, trace_id: str, *names: str) -> dict[str, list[ReceivedSpan]]:
    """The trace's spans by name, once every one of `names` has arrived."""

    def arrived() -> dict[str, list[ReceivedSpan]] | None:
        spans: dict[str, list[ReceivedSpan]] = {}
        for span in receiver.spans():
            if span.trace_id == trace_id:
                spans.setdefault(span.name, []).append(span)
                if span.kind == "SERVER":
                    spans.setdefault("SERVER", []).append(span)
        # The request's own span ends last, after its answer's: wait for it too.
        return spans if all(name in spans for name in (*names, "SERVER")) else None

    found: dict[str, list[ReceivedSpan]] = wait_until(arrived, 20.0, f"spans {names}")
    return found


def test_an_answer_is_one_trace_from_the_caller_to_the_provider(
    traced: RunningService, receiver: OTLPReceiver, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, usage=USAGE), path=OPENAI_PATH)
    trace_id, caller_span, traceparent = _caller()

    stream = read_stream(traced.url, params={"query": key}, headers={"traceparent": traceparent})

    assert stream.text == "".join(PIECES)
    spans = _trace(receiver, trace_id, "qa.answer", "chat gpt-4o-mini", "qa.admission")
    (server,) = spans["SERVER"]
    (answer,) = spans["qa.answer"]
    (call,) = spans["chat gpt-4o-mini"]
    (admission,) = spans["qa.admission"]
    # The caller's trace, continued; the server span is the caller's child.
    assert server.parent_span_id == caller_span
    assert server.attributes["qa.request_id"] == stream.events[0]["meta"]["request_id"]
    assert admission.parent_span_id == server.span_id
    assert answer.parent_span_id == server.span_id
    assert call.parent_span_id == answer.span_id
    # The provider saw the same trace, with the GenAI span as the parent.
    sent = stub.wait_for_request(key).headers["traceparent"]
    assert sent.split("-")[1:3] == [trace_id, call.span_id]
    assert call.kind == "CLIENT"
    assert call.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 500,
        "gen_ai.request.temperature": 0.7,
        "gen_ai.usage.input_tokens": 31,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.response.finish_reasons": ["stop"],
        "qa.fallback": False,
    }
    assert call.event("gen_ai.first_token").time_ns >= call.start_ns
    assert answer.attributes["qa.outcome"] == "complete"
    assert server.resource["service.name"] == "qa-under-test"
    assert server.resource["deployment.environment"] == "test"


def test_the_genai_metrics_arrive(
    traced: RunningService, receiver: OTLPReceiver, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, usage=USAGE), path=OPENAI_PATH)

    assert read_stream(traced.url, params={"query": key}).text == "".join(PIECES)

    usage = receiver.wait_for_metric("gen_ai.client.token.usage")
    assert usage.kind == "histogram"
    assert usage.unit == "{token}"
    by_type = {p.attributes["gen_ai.token.type"]: p for p in usage.points}
    assert set(by_type) == {"input", "output"}
    assert by_type["output"].attributes["gen_ai.provider.name"] == "openai"
    assert by_type["output"].explicit_bounds[:3] == [1, 4, 16]
    duration = receiver.wait_for_metric("gen_ai.client.operation.duration")
    assert duration.unit == "s"
    assert receiver.wait_for_metric("gen_ai.client.operation.time_to_first_chunk").points
    assert receiver.wait_for_metric("qa.answers.active").kind == "sum"


def test_no_question_or_answer_text_is_exported(
    traced: RunningService, receiver: OTLPReceiver, stub: UpstreamStub
) -> None:
    key = marker()
    answer = f"the secret answer {secrets.token_hex(8)}"
    stub.reply(key, Reply(pieces=[answer], usage=USAGE), path=OPENAI_PATH)
    trace_id, _, traceparent = _caller()

    read_stream(traced.url, params={"query": key}, headers={"traceparent": traceparent})
    _trace(receiver, trace_id, "qa.answer", "chat gpt-4o-mini")

    exported = receiver.raw_bytes()
    assert key.encode() not in exported
    assert answer.encode() not in exported


def test_a_fallback_and_a_timeout_show_as_what_they_were(
    traced: RunningService, receiver: OTLPReceiver, stub: UpstreamStub
) -> None:
    fell_back, timed_out = marker(), marker()
    stub.reply(
        fell_back, Reply(status=503, error_body={"error": {"message": "down"}}), path=OPENAI_PATH
    )
    stub.reply(fell_back, Reply(pieces=PIECES), path=GROQ_PATH)
    stub.reply(timed_out, Reply(pieces=PIECES, first_delay=3.0), path=OPENAI_PATH)
    stub.reply(timed_out, Reply(pieces=PIECES, first_delay=3.0), path=GROQ_PATH)
    fallback_trace, _, fallback_parent = _caller()
    timeout_trace, _, timeout_parent = _caller()

    read_stream(traced.url, params={"query": fell_back}, headers={"traceparent": fallback_parent})
    read_stream(traced.url, params={"query": timed_out}, headers={"traceparent": timeout_parent})

    spans = _trace(receiver, fallback_trace, "chat gpt-4o-mini", "chat llama-3.1-8b-instant")
    (primary,) = spans["chat gpt-4o-mini"]
    (fallback,) = spans["chat llama-3.1-8b-instant"]
    assert primary.status_code == "ERROR"
    assert primary.attributes["error.type"]
    assert primary.event("gen_ai.retry").attributes == {"qa.attempt": 2}
    # Both of the primary's attempts carried its span to the provider, as the fallback its own.
    attempts = stub.exchanges_for(fell_back, path=OPENAI_PATH)
    assert [e.headers["traceparent"].split("-")[2] for e in attempts] == [primary.span_id] * 2
    (asked,) = stub.exchanges_for(fell_back, path=GROQ_PATH)
    assert asked.headers["traceparent"].split("-")[2] == fallback.span_id
    assert fallback.attributes["qa.fallback"] is True
    assert fallback.attributes["gen_ai.provider.name"] == "groq"
    assert fallback.status_code == "UNSET"
    assert spans["qa.answer"][0].attributes["qa.fallback"] is True
    timed = _trace(receiver, timeout_trace, "qa.answer")
    (answer,) = timed["qa.answer"]
    assert answer.attributes["qa.outcome"] == "error"
    assert answer.attributes["qa.error_code"] == "upstream_timeout"
    assert answer.status_code == "ERROR"


def test_a_hang_up_shows_as_a_cancelled_call(
    traced: RunningService, receiver: OTLPReceiver, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["piece "] * 200, piece_delay=0.05), path=OPENAI_PATH)
    trace_id, _, traceparent = _caller()
    client = openai.OpenAI(
        base_url=f"{traced.url}/v1",
        api_key="unused",
        max_retries=0,
        default_headers={"traceparent": traceparent},
    )

    with client:
        stream = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": key}], stream=True
        )
        for seen, _ in enumerate(stream):
            if seen == 3:
                break
        stream.close()

    spans = _trace(receiver, trace_id, "qa.answer", "chat gpt-4o-mini")
    assert spans["qa.answer"][0].attributes["qa.outcome"] == "client_disconnected"
    (call,) = spans["chat gpt-4o-mini"]
    assert call.status_code == "ERROR"
    assert call.attributes["error.type"] == "cancelled"


def test_a_collector_that_is_down_changes_nothing_for_the_client(
    stub: UpstreamStub, workdir: Path
) -> None:
    settings = {
        **provider_settings("openai", stub),
        **_otel(down_endpoint()),
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, usage=USAGE))

    with run_service(settings, workdir) as service:
        streams = [read_stream(service.url, params={"query": key}) for _ in range(3)]

        def dropped() -> float | None:
            count = total(read_metrics(service.url), "qa_otel_spans_dropped_total")
            return count if count > 0 else None

        wait_until(dropped, 30.0, "dropped spans counted")

    for stream in streams:
        assert stream.text == "".join(PIECES)
        assert stream.events[-1]["done"]["finish_reason"] == "stop"


def test_off_by_default_no_span_is_made_and_no_traceparent_sent(
    service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES))
    _, _, traceparent = _caller()

    read_stream(service.url, params={"query": key}, headers={"traceparent": traceparent})

    assert "traceparent" not in stub.wait_for_request(key).headers


def test_a_resume_is_named_by_its_route_and_linked_to_its_answer(
    receiver: OTLPReceiver, stub: UpstreamStub, workdir: Path
) -> None:
    """Ids in paths are capabilities: spans name the route, and the path by refs."""
    settings = {**provider_settings("openai", stub), **_otel(receiver.endpoint)}
    key = marker()
    stub.reply(key, Reply(pieces=["piece "] * 40, piece_delay=0.05, usage=USAGE))

    with run_service(settings, workdir) as service:
        with httpx.stream("GET", f"{service.url}/ai_write", params={"query": key}) as first:
            meta = json.loads(
                next(line for line in first.iter_lines() if line.startswith("data: "))[6:]
            )
        answer_id = meta["meta"]["answer_id"]
        trace_id, _, traceparent = _caller()
        with httpx.stream(
            "GET",
            f"{service.url}/answers/{answer_id}/events",
            headers={"traceparent": traceparent},
            timeout=30,
        ) as resumed:
            events = [
                json.loads(line[6:]) for line in resumed.iter_lines() if line.startswith("data: ")
            ]

    assert "".join(e.get("text", "") for e in events) == "piece " * 40
    spans = _trace(receiver, trace_id)
    (server,) = spans["SERVER"]
    assert server.name == "GET /answers/{answer_id}/events"
    assert server.attributes["http.route"] == "/answers/{answer_id}/events"
    assert answer_id not in json.dumps(server.attributes)
    (answer,) = [
        s
        for s in receiver.spans()
        if s.name == "qa.answer" and s.attributes.get("qa.request_id") == meta["meta"]["request_id"]
    ]
    assert [(link.span_id, link.attributes) for link in server.links] == [
        (answer.span_id, {"qa.link": "resume"})
    ]
    assert answer.event("qa.resume")
    assert answer_id.encode() not in receiver.raw_bytes()


def test_captured_content_is_opt_in_and_redacted_like_the_logs(
    receiver: OTLPReceiver, stub: UpstreamStub, workdir: Path
) -> None:
    settings = {
        **provider_settings("openai", stub),
        **_otel(receiver.endpoint),
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
    }
    key = marker()
    # A provider that echoes the key it was sent, as error bodies do.
    stub.reply(key, Reply(pieces=["echo ", OPENAI_KEY, " end"], usage=USAGE))
    trace_id, _, traceparent = _caller()

    with run_service(settings, workdir) as service:
        read_stream(service.url, params={"query": key}, headers={"traceparent": traceparent})
        (call,) = _trace(receiver, trace_id, "chat gpt-4o-mini")["chat gpt-4o-mini"]

    asked = json.loads(call.attributes["gen_ai.input.messages"])
    assert asked[-1]["role"] == "user"
    # The prompt's own words around the question: what the provider was sent.
    assert key in asked[-1]["parts"][0]["content"]
    (answered,) = json.loads(call.attributes["gen_ai.output.messages"])
    assert answered["role"] == "assistant"
    assert answered["finish_reason"] == "stop"
    assert answered["parts"][0]["content"].startswith("echo ")
    assert OPENAI_KEY not in answered["parts"][0]["content"]
    assert OPENAI_KEY.encode() not in receiver.raw_bytes()


def test_a_hanging_collector_never_holds_up_a_shutdown(stub: UpstreamStub, workdir: Path) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES))
    with run_receiver() as hanging:
        hanging.answer_delay = 120.0
        settings = {**provider_settings("openai", stub), **_otel(hanging.endpoint)}
        with run_service(settings, workdir) as service:
            assert read_stream(service.url, params={"query": key}).text == "".join(PIECES)
            # Spans are waiting on the collector now; a SIGTERM must not wait for them.
            wait_until(lambda: hanging.exports() or None, 20.0, "an export under way")

        # Stopped by SIGTERM, with 10 s before a SIGKILL (tests/support/service.py).
        assert service.process.returncode == 0


def test_a_join_links_to_the_provider_call_it_shares(
    receiver: OTLPReceiver, stub: UpstreamStub, workdir: Path
) -> None:
    settings = {
        **provider_settings("openai", stub),
        **_otel(receiver.endpoint),
        "QA_ANSWER_CACHE_TTL_SECONDS": "300",
    }
    key = marker()
    stub.reply(key, Reply(pieces=["piece "] * 30, piece_delay=0.05, usage=USAGE))
    first_trace, _, first_parent = _caller()
    joiner_trace, _, joiner_parent = _caller()

    with (
        run_service(settings, workdir) as service,
        httpx.stream(
            "GET",
            f"{service.url}/ai_write",
            params={"query": key},
            headers={"traceparent": first_parent},
            timeout=30,
        ) as first,
    ):
        lines = first.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        # httpx-sse asks with Cache-Control: no-store, a bypass: plain httpx here.
        with httpx.stream(
            "GET",
            f"{service.url}/ai_write",
            params={"query": key},
            headers={"traceparent": joiner_parent},
            timeout=30,
        ) as joiner_stream:
            joined_as = joiner_stream.headers["x-qa-cache"]
            texts = [
                json.loads(line[6:]).get("text", "")
                for line in joiner_stream.iter_lines()
                if line.startswith("data: ")
            ]
        for _ in lines:
            pass

    assert joined_as == "join"
    assert "".join(texts) == "piece " * 30
    (source,) = [
        s
        for s in _trace(receiver, first_trace, "qa.answer")["qa.answer"]
        if s.attributes.get("qa.cache") == "source"
    ]
    (joiner,) = _trace(receiver, joiner_trace, "qa.answer")["SERVER"]
    assert [(link.trace_id, link.span_id, link.attributes) for link in joiner.links] == [
        (first_trace, source.span_id, {"qa.link": "join"})
    ]
    assert source.event("qa.join")
    assert len(stub.exchanges_for(key)) == 1
