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
        # Streams are long-lived: no pool cap below what the service admits.
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        event_hooks={"response": [_record_response]},
    )


def build_sync_client(connect_timeout: float, read_timeout: float) -> httpx.Client:
    """Never used for streaming; handed to the SDKs so they do not build their own."""
    return httpx.Client(timeout=httpx.Timeout(read_timeout, connect=connect_timeout))


@asynccontextmanager
async def closing_upstream(close_timeout: float) -> AsyncIterator[None]:
    """Close every upstream response opened inside this block when it exits."""
    responses: set[httpx.Response] = set()
    _answer_responses.set(responses)
    try:
        yield
    finally:
        # Runs during cancellation, so the awaits need a shield, and the
        # shield a deadline.
        with anyio.move_on_after(close_timeout, shield=True):
            for response in responses:
                if not response.is_closed:
                    await response.aclose()
                    log.debug("closed upstream response early")
        _answer_responses.set(None)
