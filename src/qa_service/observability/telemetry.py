"""Prometheus metrics, and the one log line per answer.

Labels are the provider and the model (fixed for a process), plus an outcome or
an error code from a fixed set. Nothing per request, so series stay few however
many answers pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from qa_service.answers.model import AnswerRecord
from qa_service.core.events import AnswerMeta, CacheOutcome

log = logging.getLogger("qa_service.answers")

# Time to first token: a model answers in 0.1 s to tens of seconds.
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
LABELS = ("provider", "model")


class Telemetry:
    """Metrics in a registry of this app's own, so apps in one process never collide."""

    def __init__(self, provider: str, model: str) -> None:
        self.registry = CollectorRegistry()
        self._labels = (provider, model)
        counter, gauge, histogram = self._counter, self._gauge, self._histogram
        self.requests = counter(
            "qa_requests",
            "Answers by outcome (complete, error, cancelled, client_disconnected), and requests "
            "refused before one started (refused, by error code), in every dialect: /ai_write, "
            "/v1/chat/completions, /api/chat",
            "outcome",
            "code",
        )
        self.active_streams = gauge("qa_active_streams", "Answers being generated now")
        self.ttft = histogram(
            "qa_time_to_first_token_seconds",
            "From accepting the request to the first text",
            TTFT_BUCKETS,
        )
        self.duration = histogram(
            "qa_answer_duration_seconds",
            "From accepting the request to the end of the answer",
            DURATION_BUCKETS,
        )
        self.tokens_relayed = counter(
            "qa_tokens_relayed",
            "Text pieces generated into answers (a provider chunk, or several that arrived "
            "together), counted once per answer however many clients read or replay it",
        )
        self.usage_tokens = counter(
            "qa_usage_tokens", "Tokens as the provider reported them", "kind"
        )
        self.upstream_errors = counter(
            "qa_upstream_errors", "Answers failed by the provider, by public error code", "code"
        )
        self.client_disconnects = counter(
            "qa_client_disconnects", "Clients that left before their answer ended"
        )
        self.connections_closed = counter(
            "qa_connections_closed",
            "Connections the server ended itself: no_request (no request headers in time), "
            "response_cut_off (reset mid-response, e.g. a client that stopped reading)",
            "reason",
        )
        self.resumes = counter(
            "qa_resumes",
            "Reconnects that continued an answer (Last-Event-ID, /answers/{id}/events, "
            "/api/chat/{id}/stream)",
        )
        self.replayed_events = counter(
            "qa_replayed_events", "Events sent again to a resuming client, from the answer's log"
        )
        self.resumes_refused = counter(
            "qa_resumes_refused",
            "Resumes refused: answer_not_found (unknown or expired), resume_mismatch, "
            "invalid_last_event_id, store_unavailable",
            "code",
        )
        self.cancels = counter(
            "qa_explicit_cancels",
            "POST /answers/{id}/cancel for an answer still running (stopped here, or asked of "
            "the replica running it)",
        )
        self.producers_lost = counter(
            "qa_producers_lost",
            "Answers whose generating replica stopped renewing its lease (producer_lost)",
        )
        self.otel_spans_dropped = counter(
            "qa_otel_spans_dropped",
            "Spans the OTLP exporter could not deliver (collector down, slow or refusing), "
            "and so dropped; 0 with tracing off",
        )
        self.client_slots_held = gauge(
            "qa_client_slots_held",
            "Clients' answers in progress this instance holds a QA_CLIENT_MAX_STREAMS slot for",
        )
        self.asyncio_tasks = gauge(
            "qa_asyncio_tasks",
            "Tasks alive on the service's event loop: answers, readers, background loops. "
            "At rest it returns to the same number; one that keeps climbing is a leak",
        )
        self.stream_limit = gauge(
            "qa_stream_limit",
            "Answers this instance admits at once now: the lowest of QA_MAX_STREAMS, what the "
            "open-file limit allows and the adaptive limit (QA_ADAPTIVE_LIMIT)",
        )
        self.over_capacity_refusals = counter(
            "qa_over_capacity_refusals",
            "Answers refused 503 over_capacity, by the bound that refused them: max_streams "
            "(QA_MAX_STREAMS, or QA_UPSTREAM_MAX_CONNECTIONS when lower), open_files (what the "
            "open-file limit allows), adaptive (the adaptive limit, QA_ADAPTIVE_LIMIT)",
            "bound",
        )
        self.event_loop_lag = gauge(
            "qa_event_loop_lag_seconds",
            "The event loop's lag, smoothed; it moves the adaptive limit when that is on",
        )
        self.auth_refusals = counter(
            "qa_auth_refusals",
            "Requests refused 401 unauthorized: no_credentials, wrong_key, bad_ticket "
            "(unknown, spent or expired), ticket_mismatch (issued for another request), "
            "ticket_key_removed (bought with a key no longer listed)",
            "reason",
        )
        self.fallbacks = counter(
            "qa_fallbacks",
            "Answers the fallback provider wrote, the primary having failed before any text",
        )
        self.cache_outcomes = counter(
            "qa_answer_cache",
            "Answers by what the answer cache did: hit (replayed, no provider call), join (read "
            "an identical answer in flight), miss (asked the provider), bypass (Cache-Control)",
            "outcome",
        )
        self.upstream_cancellations = counter(
            "qa_upstream_cancellations",
            "Provider requests the service closed before they finished",
        )

    # Every metric carries the provider and the model, then its own labels, if any.
    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(name, documentation, [*LABELS, *labels], registry=self.registry)

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, LABELS, registry=self.registry)

    def _histogram(self, name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(name, documentation, LABELS, buckets=buckets, registry=self.registry)

    def watch_client_slots(self, held: Callable[[], int]) -> None:
        """Read at each scrape: a value that never returns to 0 at rest is a leak."""
        self.client_slots_held.labels(*self._labels).set_function(held)

    def watch_event_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count `loop`'s tasks at each scrape (read on the loop: /metrics is async)."""
        self.asyncio_tasks.labels(*self._labels).set_function(lambda: len(asyncio.all_tasks(loop)))

    def watch_capacity(self, limit: Callable[[], int], lag: Callable[[], float]) -> None:
        """Read at each scrape: the admission's bound now, and the loop's lag that moves it."""
        self.stream_limit.labels(*self._labels).set_function(limit)
        self.event_loop_lag.labels(*self._labels).set_function(lag)

    def over_capacity(self, bound: str) -> None:
        self.over_capacity_refusals.labels(*self._labels, bound).inc()

    def connection_closed(self, reason: str) -> None:
        """The server ended a connection itself: `no_request` or `response_cut_off`."""
        self.connections_closed.labels(*self._labels, reason).inc()

    def resumed(self, replayed: int) -> None:
        self.resumes.labels(*self._labels).inc()
        self.replayed_events.labels(*self._labels).inc(replayed)

    def resume_refused(self, code: str) -> None:
        self.resumes_refused.labels(*self._labels, code).inc()

    def auth_refused(self, reason: str) -> None:
        self.auth_refusals.labels(*self._labels, reason).inc()

    def cancel_requested(self) -> None:
        self.cancels.labels(*self._labels).inc()

    def producer_lost(self) -> None:
        self.producers_lost.labels(*self._labels).inc()

    def spans_dropped(self, count: int) -> None:
        """From the exporter's thread: prometheus_client's counters take that."""
        self.otel_spans_dropped.labels(*self._labels).inc(count)

    def cache_outcome(self, outcome: str) -> None:
        self.cache_outcomes.labels(*self._labels, outcome).inc()

    def refused(self, code: str) -> None:
        self.requests.labels(*self._labels, "refused", code).inc()

    def answer_started(self, meta: AnswerMeta) -> None:
        if _for_a_client(meta.cache):
            self.active_streams.labels(*self._labels).inc()

    def answer_finished(self, record: AnswerRecord) -> None:
        """A client's answer counts in the answers' metrics, a provider call in the
        provider's; without the cache an answer is both."""
        if _for_a_client(record.cache):
            self._client_answer_finished(record)
        if _called_the_provider(record.cache):
            self._provider_call_finished(record)
        _log_answer(record)

    def _client_answer_finished(self, record: AnswerRecord) -> None:
        labels = self._labels
        self.active_streams.labels(*labels).dec()
        self.requests.labels(*labels, record.outcome, record.error_code or "").inc()
        self.duration.labels(*labels).observe(record.duration_ms / 1000)
        if record.ttft_ms is not None:
            self.ttft.labels(*labels).observe(record.ttft_ms / 1000)
        if record.outcome == "client_disconnected":
            self.client_disconnects.labels(*labels).inc()

    def _provider_call_finished(self, record: AnswerRecord) -> None:
        labels = self._labels
        self.tokens_relayed.labels(*labels).inc(record.pieces)
        if record.input_tokens is not None:
            self.usage_tokens.labels(*labels, "input").inc(record.input_tokens)
        if record.output_tokens is not None:
            self.usage_tokens.labels(*labels, "output").inc(record.output_tokens)
        if record.error_code and record.error_code.startswith("upstream_"):
            self.upstream_errors.labels(*labels, record.error_code).inc()
        if record.fallback:
            self.fallbacks.labels(*labels).inc()
        # Each stops generation mid-answer, so each closes a provider request early.
        if record.outcome in ("client_disconnected", "cancelled") or record.error_code == (
            "shutting_down"
        ):
            self.upstream_cancellations.labels(*labels).inc()


def _for_a_client(cache: str | None) -> bool:
    """Whether an answer is a client's: all but the provider call a cache shares."""
    return cache != CacheOutcome.SOURCE


def _called_the_provider(cache: str | None) -> bool:
    """Whether the answer itself asked the provider: with the cache on, only the
    shared answers (`source`) do; every client's answer (a bypass too) reads one."""
    return cache in (None, CacheOutcome.SOURCE)


def _log_answer(record: AnswerRecord) -> None:
    level = logging.WARNING if record.outcome == "error" else logging.INFO
    # Every field of the record, under its own name: the line is the record.
    log.log(level, "answer", extra=dataclasses.asdict(record))
