"""Builds the chat model for the configured provider and owns its HTTP clients.

The clients are ours so they close with the app: left to themselves,
langchain-openai caches a process-wide client and the SDKs build their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any, Literal

import groq
import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from qa_service.config import Settings
from qa_service.generation.chat_models import TextFirstChatGroq, TextFirstChatOpenAI
from qa_service.generation.demo import build_demo_model
from qa_service.generation.failures import FALLBACK_FAILURES
from qa_service.generation.sdk_clients import (
    PlainChunksAsyncGroq,
    PlainChunksAsyncOpenAI,
    plain_chunks_client,
)
from qa_service.generation.upstream import (
    build_async_client,
    build_sync_client,
    upstream_limits,
    upstream_timeout,
)

log = logging.getLogger(__name__)

# The warm-up request's bound: it must never hold anything up for long.
WARM_UP_TIMEOUT = httpx.Timeout(5.0)
# Statuses of the warm-up that mean the key or the base URL is wrong.
_MISCONFIGURED = frozenset({401, 403, 404})


@asynccontextmanager
async def open_chat_model(settings: Settings) -> AsyncIterator[Runnable[Any, Any]]:
    """The chat model for `settings`, with its fallback if one is configured;
    its HTTP clients close when the block exits."""
    provider = settings.resolved_provider
    if provider == "demo":
        yield build_demo_model(
            chunk_delay_seconds=settings.demo_chunk_delay_ms / 1000,
            pause_seconds=settings.demo_pause_seconds,
        )
        return

    async with AsyncExitStack() as stack:
        timeout = upstream_timeout(
            settings.upstream_connect_timeout_seconds,
            settings.upstream_read_timeout_seconds,
            settings.upstream_pool_timeout_seconds,
        )
        limits = upstream_limits(
            settings.upstream_max_connections,
            settings.upstream_max_idle_connections,
            settings.upstream_keepalive_seconds,
        )
        # One pair of clients for both providers: the same timeouts, pool,
        # retry policy and response recording (an answer closes the
        # fallback's responses as it does the primary's).
        async_client = await stack.enter_async_context(
            build_async_client(timeout, limits, settings.upstream_max_retry_wait_seconds)
        )
        sync_client = stack.enter_context(build_sync_client(timeout))
        common: dict[str, Any] = {
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "max_retries": settings.upstream_max_retries,
            "streaming": True,
            # Given explicitly, because the SDKs send their own timeout with
            # every request, overriding the client's; langchain's default
            # (None) reaches them as "no timeout at all".
            "timeout": timeout,
            "http_async_client": async_client,
            "http_client": sync_client,
        }
        sdk_client = _sdk_client(settings, provider, common)
        model = _build_model(settings, provider, settings.resolved_model, sdk_client, common)
        warm_up = asyncio.create_task(_warm_up(sdk_client), name="qa-upstream-warm-up")
        stack.push_async_callback(_cancelled, warm_up)
        fallback_provider = settings.fallback_provider
        fallback_model = settings.resolved_fallback_model
        if fallback_provider is not None and fallback_model is not None:
            fallback_client = _sdk_client(settings, fallback_provider, common)
            fallback = _build_model(
                settings, fallback_provider, fallback_model, fallback_client, common
            )
            yield with_fallback(model, fallback)
        else:
            yield model


async def _warm_up(sdk_client: PlainChunksAsyncOpenAI | PlainChunksAsyncGroq) -> None:
    """One connection to the primary provider opened at start-up, left in the pool.

    Then the first answer does not pay a TCP and TLS handshake (two or three
    round trips to a provider) before its request. `GET /models` is the
    request because it is free (no tokens) and any answer to it, even a 401,
    leaves the connection open. Failures are only noted: the provider may be
    down at start-up, and answers report that themselves.
    """
    try:
        # Untyped, as in sdk_clients.py: openai 3.x types the timeout with httpx2.
        options: dict[str, Any] = {"max_retries": 0, "timeout": WARM_UP_TIMEOUT}
        await sdk_client.with_options(**options).models.list()
    except (openai.APIStatusError, groq.APIStatusError) as exc:
        # The earliest word of a wrong key or base URL: said once, status only.
        level = logging.WARNING if exc.status_code in _MISCONFIGURED else logging.DEBUG
        log.log(level, "upstream warm-up refused status=%s", exc.status_code)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the pool cold, no more
        log.debug("upstream warm-up failed exception=%s", type(exc).__name__)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def _sdk_client(
    settings: Settings, provider: Literal["openai", "groq"], common: dict[str, Any]
) -> PlainChunksAsyncOpenAI | PlainChunksAsyncGroq:
    api_key = settings.openai_api_key if provider == "openai" else settings.groq_api_key
    base_url = settings.openai_base_url if provider == "openai" else settings.groq_base_url
    # Ours rather than the one LangChain would build: its streams hand chunks
    # up as dicts (sdk_clients.py).
    return plain_chunks_client(
        provider,
        api_key=api_key.get_secret_value() if api_key is not None else None,
        base_url=base_url,
        timeout=common["timeout"],
        max_retries=common["max_retries"],
        http_client=common["http_async_client"],
    )


def _build_model(
    settings: Settings,
    provider: Literal["openai", "groq"],
    model: str,
    sdk_client: PlainChunksAsyncOpenAI | PlainChunksAsyncGroq,
    common: dict[str, Any],
) -> BaseChatModel:
    api_key = settings.openai_api_key if provider == "openai" else settings.groq_api_key
    base_url = settings.openai_base_url if provider == "openai" else settings.groq_base_url
    if provider == "openai":
        return TextFirstChatOpenAI(
            model=model,
            api_key=api_key,
            base_url=base_url,
            root_async_client=sdk_client,
            async_client=sdk_client.chat.completions,
            # Ask for the final usage chunk even from non-default base URLs;
            # OpenAI-compatible servers that do not know the option ignore it.
            stream_usage=True,
            # Off: it wraps each chunk read in asyncio.wait_for, which on
            # Python 3.11 can swallow the cancel of a client's hang-up
            # (cpython gh-86296), so the answer ran on, paid for. The
            # writer bounds the wait for each chunk itself, for both
            # providers (writer.py).
            stream_chunk_timeout=None,
            **common,
        )
    return TextFirstChatGroq(
        model=model,
        api_key=api_key,
        base_url=base_url,
        async_client=sdk_client.chat.completions,
        **common,
    )


def with_fallback(primary: Runnable[Any, Any], fallback: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """`primary`, which hands the request to `fallback` when it fails before any text
    (chat_models.py says why that holds exactly)."""
    return primary.with_fallbacks([fallback], exceptions_to_handle=FALLBACK_FAILURES)
