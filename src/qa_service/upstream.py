"""The HTTP client the chat models use, and closing an answer's upstream requests.

Why this exists: when a client hangs up, the answer's generator is cancelled or
closed. langchain-openai closes its response then, but langchain-groq iterates
the groq SDK's AsyncStream, whose generator has no `finally: response.aclose()`;
closed early, it leaves the response open and the provider keeps generating
(and billing) until garbage collection. Rather than trust each SDK, every
response this client opens is recorded against the answer that opened it, and
the answer closes them all when it ends, however it ends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

import anyio
import httpx

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


def build_async_client(connect_timeout: float, read_timeout: float) -> httpx.AsyncClient:
    """An AsyncClient whose responses answers can close; the caller closes it."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        # Streams are long-lived: do not cap concurrent upstream streams below
        # what the service itself admits.
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        event_hooks={"response": [_record_response]},
    )


def build_sync_client(connect_timeout: float, read_timeout: float) -> httpx.Client:
    """Handed to the SDKs so they do not build (and leak) process-wide ones."""
    return httpx.Client(timeout=httpx.Timeout(read_timeout, connect=connect_timeout))


@asynccontextmanager
async def closing_upstream(close_timeout: float) -> AsyncIterator[None]:
    """Close every upstream response opened inside this block when it exits."""
    responses: set[httpx.Response] = set()
    _answer_responses.set(responses)
    try:
        yield
    finally:
        # Runs during cancellation too, so the awaits need a shield, and the
        # shield needs a deadline.
        with anyio.move_on_after(close_timeout, shield=True):
            for response in responses:
                if not response.is_closed:
                    await response.aclose()
                    log.debug("closed upstream response early")
        _answer_responses.set(None)
