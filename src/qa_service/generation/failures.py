"""The one place that maps provider SDK and transport failures to public errors.

An exception's own text never reaches a client or a log line: provider error
bodies can echo the request, and the request carries the API key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import groq
import httpx
import openai

from qa_service.core.errors import (
    INTERNAL,
    OVER_CAPACITY,
    UPSTREAM_AUTH,
    UPSTREAM_BAD_REQUEST,
    UPSTREAM_ERROR,
    UPSTREAM_INCOMPLETE,
    UPSTREAM_INTERRUPTED,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNAVAILABLE,
    PublicError,
    QAServiceError,
    UpstreamIncompleteError,
    UpstreamStalledError,
)
from qa_service.generation.upstream import retry_after_seconds

_STATUS_ERRORS = (openai.APIStatusError, groq.APIStatusError)
_TIMEOUT_ERRORS = (
    openai.APITimeoutError,
    groq.APITimeoutError,
    httpx.TimeoutException,
    UpstreamStalledError,
    # asyncio's, and langchain-openai's StreamChunkTimeoutError, a subclass.
    TimeoutError,
)
_CONNECT_ERRORS = (openai.APIConnectionError, groq.APIConnectionError, httpx.ConnectError)
# Raised while reading an already-open body: the provider cut the stream.
_CUT_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError)
# An error object inside an open stream (the SDKs raise the bare APIError for it).
_IN_STREAM_ERRORS = (openai.APIError, groq.APIError)


# The failures worth asking the fallback provider about: those that say the
# primary provider cannot answer now (down, overloaded, out of quota, its key or
# model refused), not that the request is at fault. So not 400 or 422: the
# fallback would refuse the same prompt; nor an error object inside an open
# stream, which the SDKs raise as the bare APIError that every class here
# derives from (an except clause matches by subclass, so it cannot be named
# without all of them). Never cancellation: a client that hangs up must not
# start a fallback (asyncio.CancelledError is a BaseException, so no
# Exception subclass here matches it; test_fallback.py holds it).
FALLBACK_FAILURES: tuple[type[Exception], ...] = (
    openai.InternalServerError,  # 5xx (langchain-openai's OpenAIAPIError too)
    groq.InternalServerError,
    openai.RateLimitError,  # 429, after the SDK's own retries
    groq.RateLimitError,
    openai.AuthenticationError,  # 401/403: the primary's key, not the question
    groq.AuthenticationError,
    openai.PermissionDeniedError,
    groq.PermissionDeniedError,
    openai.NotFoundError,  # 404: the primary's model or base URL is gone
    groq.NotFoundError,
    openai.APIConnectionError,  # refused, reset, connect and read timeouts
    groq.APIConnectionError,
    # A body cut before any text: the groq SDK passes httpx's error on unwrapped.
    httpx.TransportError,
)


def classify_failure(exc: BaseException) -> PublicError:
    """Map any failure while answering to the public error a client sees."""
    if isinstance(exc, QAServiceError):
        return exc.public
    if isinstance(exc, _STATUS_ERRORS):
        return _classify_status(exc.status_code, exc.response.headers)
    if isinstance(exc, UpstreamIncompleteError):
        return UPSTREAM_INCOMPLETE
    # The SDKs wrap transport errors (openai: a cut body becomes
    # APIConnectionError, and langchain-openai wraps that again), so the
    # transport error that started it decides.
    causes = _cause_chain(exc)
    # Our own pool at its bound (QA_UPSTREAM_MAX_CONNECTIONS), not the
    # provider: the service is answering all it can.
    if any(isinstance(cause, httpx.PoolTimeout) for cause in causes):
        return OVER_CAPACITY
    for kinds, public in (
        (_CUT_ERRORS, UPSTREAM_INTERRUPTED),
        (_TIMEOUT_ERRORS, UPSTREAM_TIMEOUT),
        (_CONNECT_ERRORS, UPSTREAM_UNAVAILABLE),
        (_IN_STREAM_ERRORS, UPSTREAM_ERROR),
    ):
        if any(isinstance(cause, kinds) for cause in causes):
            return public
    return INTERNAL


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 16:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def upstream_status(exc: BaseException) -> int | None:
    """The provider's HTTP status, for logs and metrics; never its body."""
    if isinstance(exc, _STATUS_ERRORS):
        return exc.status_code
    return None


def _classify_status(status: int, headers: Mapping[str, str]) -> PublicError:
    if status in (401, 403):
        return UPSTREAM_AUTH
    if status == 429:
        public = UPSTREAM_RATE_LIMITED
    elif status in (408, 409) or status >= 500:
        public = UPSTREAM_UNAVAILABLE
    else:
        return UPSTREAM_BAD_REQUEST
    retry_after = _retry_after_seconds(headers)
    if retry_after is None:
        return public
    return dataclasses.replace(public, retry_after_seconds=retry_after)


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    # Passed on to clients only within an hour: past that it is a provider's
    # mistake or an outage, and "ask again in a day" helps nobody.
    seconds = retry_after_seconds(headers)
    return round(seconds, 3) if seconds is not None and seconds <= 3600 else None
