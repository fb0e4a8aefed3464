"""The service's own spans: a request's (its server span, shown as a log line would
show the request), its phases (admission, the first-text hold), and each answer's,
in the answer's own task. Made only while tracing is on (tracing.py); the
provider calls' spans are generation/call_spans.py's.
"""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context, metrics, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import Span, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qa_service.answers.model import AnswerRecord, answer_ref
from qa_service.core.events import AnswerMeta, CacheOutcome
from qa_service.generation.call_spans import CALL_TRACING, TRACER_NAME
from qa_service.observability.logs import refer_to_answers

# Probes and scrapes, every few seconds from every instance: no span each,
# unless OTEL_PYTHON_ASGI_EXCLUDED_URLS (or OTEL_PYTHON_EXCLUDED_URLS) says otherwise.
_UNTRACED_PATHS = "healthz,readyz,metrics"


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
