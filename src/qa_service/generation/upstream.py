"""The HTTP clients the chat models use, and closing an answer's upstream responses.

Why this exists: an answer is stopped by cancelling its task. If the cancel
lands inside a network read, it unwinds through every frame and each SDK
closes its response. If it lands between chunks, it is thrown in at
LangChain's outermost generator, and the generators below it (the model's
`_astream`, the SDK's stream) stay suspended at a `yield`: nothing closes an
async generator whose `async for` was abandoned. Their responses then stay
open, and the provider keeps generating, until garbage collection; the groq
SDK's stream has no `finally` at all. So every response these clients open is
recorded against the answer that opened it, and the answer closes them when it
ends, however it ends (tests/integration/test_cancellation.py).
"""

from __future__ import annotations

import email.utils
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

import anyio
import httpx

from qa_service.generation.call_spans import propagate_call

log = logging.getLogger(__name__)

# The responses opened by the current answer. LangChain runs model steps in
# child tasks whose contexts are copies of ours; the copies share this set.
_answer_responses: ContextVar[set[httpx.Response] | None] = ContextVar(
    "qa_answer_responses", default=None
)


async def _record_response(response: httpx.Response) -> None:
    responses = _answer_responses.get()
    if responses is not None:
        responses.add(response)


# Statuses the SDKs retry by themselves (both follow the same rules).
_RETRIED_STATUSES = frozenset({408, 409, 429})


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """How long the provider asked us to wait, read as the SDKs read it.

    `retry-after-ms` first; if absent or unreadable, `retry-after` as seconds
    or an HTTP date. None when absent, unreadable, negative or not finite.
    Never raises: it runs inside a response hook, where an exception would
    look like a connection failure to the SDK.
    """
    for name, read in (("retry-after-ms", _milliseconds), ("retry-after", _seconds_or_date)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            seconds = read(raw)
        except (ValueError, TypeError, OverflowError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    return None


def _milliseconds(raw: str) -> float:
    return float(raw) / 1000


def _seconds_or_date(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        moment = email.utils.parsedate_to_datetime(raw)
    if moment.tzinfo is None:  # "-0000": a date in UTC, the RFC says
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime.now(UTC)).total_seconds()


def _retry_policy(max_wait: float) -> Callable[[httpx.Response], Awaitable[None]]:
    """A response hook: no SDK retry that would wait longer than `max_wait`.

    The SDKs honour a Retry-After up to their own limits (openai 120 s; groq
    60 s, past which it retries on its own backoff regardless), while a
    person waits for the first word. Both obey `x-should-retry`, so a wait
    beyond ours turns the retry off, and the answer ends at once with the
    provider's Retry-After passed on to the client. The SDKs log their
    retries at INFO, which the library floor drops (logs.py), so this logs
    every retryable answer itself: status and wait only.
    """

    async def hook(response: httpx.Response) -> None:
        status = response.status_code
        if status not in _RETRIED_STATUSES and status < 500:
            return
        wait = retry_after_seconds(response.headers)
        fields = {"upstream_status": status, "retry_after_seconds": wait}
        if wait is not None and wait > max_wait:
            response.headers["x-should-retry"] = "false"
            log.warning("provider asked for a longer wait than a retry may take", extra=fields)
        else:
            log.info("provider answered with a retryable status", extra=fields)

    return hook


async def _propagate_call(request: httpx.Request) -> None:
    propagate_call(request)


def upstream_timeout(
    connect_timeout: float, read_timeout: float, pool_timeout: float
) -> httpx.Timeout:
    """Connect bound, the longest silence between two reads (and writes), and the
    longest wait for a free connection when the pool is at its bound."""
    return httpx.Timeout(read_timeout, connect=connect_timeout, pool=pool_timeout)


def upstream_limits(
    max_connections: int, max_idle_connections: int, keepalive_seconds: float
) -> httpx.Limits:
    """A bounded pool that keeps a few idle connections warm for `keepalive_seconds`.

    Bounded: past `max_connections` an answer waits for a free connection
    (the pool timeout), then ends `over_capacity` (failures.py); without a
    bound, a flood opens as many provider connections, and as many TLS
    handshakes on our core, as it has answers. Streams hold their connection
    for the whole answer over HTTP/1.1, so the bound is set at or above the
    streams the service admits (QA_MAX_STREAMS), not below.

    Warm, but only a few: httpcore's pool checks every idle connection (a
    poll of its socket) each time a request starts or ends, so each idle
    connection kept makes every request dearer. Measured (benchmarks/
    transport.py, README "The transport benchmark"): a burst of 200 short
    answers over TLS cost the client 22 ms of CPU per answer with 100 idle
    connections kept, against 3 to 5 with 0 to 20, handshakes included.
    So `max_idle_connections` (10) stay open, enough for the first answers
    after a pause, not the whole last burst.

    Kept for 60 s rather than httpx's 5 s: OpenAI's and Groq's APIs sit
    behind Cloudflare, which closes an idle client connection after 400 s
    (HTTP/1.1 keep-alive and HTTP/2 idle, its "Connection limits"
    reference); NAT gateways on the way drop idle flows after 350 s (AWS) or,
    as openai-python issue 3269 lists them, 120 s. A connection the far end
    closed while we still hold it is what surfaces as "Connection reset" on
    the next request (openai-python issue 371), so our expiry stays well
    below the shortest of those.
    """
    return httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=min(max_idle_connections, max_connections),
        keepalive_expiry=keepalive_seconds,
    )


def build_async_client(
    timeout: httpx.Timeout, limits: httpx.Limits, max_retry_wait: float
) -> httpx.AsyncClient:
    """An AsyncClient whose responses answers can close; the caller closes it."""
    return httpx.AsyncClient(
        timeout=timeout,
        limits=limits,
        event_hooks={
            "request": [_propagate_call],
            "response": [_record_response, _retry_policy(max_retry_wait)],
        },
    )


def build_sync_client(timeout: httpx.Timeout) -> httpx.Client:
    """Never used for streaming; handed to the SDKs so they do not build their own."""
    return httpx.Client(timeout=timeout)


class AnswerUpstream:
    """The provider responses one answer opened; closing it closes every one.

    Closing works from any task. A stopping answer closes them from its own
    task as it ends; `Answer.cancel` closes them from outside when the
    answer's task does not end in time (a library swallowed the cancel).
    Either way the provider sees the request end.
    """

    def __init__(self, close_timeout: float) -> None:
        self._responses: set[httpx.Response] = set()
        self._close_timeout = close_timeout

    @asynccontextmanager
    async def recording(self) -> AsyncIterator[None]:
        """Record every response opened inside this block; close them all as it exits."""
        token = _answer_responses.set(self._responses)
        try:
            yield
        finally:
            _answer_responses.reset(token)
            await self.close()

    async def close(self) -> None:
        """Close every open response, bounded: runs during cancellation too."""
        # A shield, because this runs while the caller is being cancelled,
        # and a deadline for the shield.
        with anyio.move_on_after(self._close_timeout, shield=True):
            for response in list(self._responses):
                if not response.is_closed:
                    await response.aclose()
                    log.debug("closed upstream response early")
