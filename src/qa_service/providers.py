"""Builds the chat model for the configured provider and owns its HTTP clients.

The clients are ours so they close with the app: left to themselves,
langchain-openai caches a process-wide client and the SDKs build their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from langchain_core.runnables import Runnable
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI

from qa_service.config import Settings
from qa_service.demo import build_demo_model


@asynccontextmanager
async def open_chat_model(settings: Settings) -> AsyncIterator[Runnable[Any, Any]]:
    """The chat model for `settings`; its HTTP clients close when the block exits."""
    provider = settings.resolved_provider
    if provider == "demo":
        yield build_demo_model(
            chunk_delay_seconds=settings.demo_chunk_delay_ms / 1000,
            pause_seconds=settings.demo_pause_seconds,
        )
        return

    async with AsyncExitStack() as stack:
        timeout = httpx.Timeout(
            settings.upstream_read_timeout_seconds,
            connect=settings.upstream_connect_timeout_seconds,
        )
        # Streams are long-lived: no pool cap below what the service admits.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
        async_client = await stack.enter_async_context(
            httpx.AsyncClient(timeout=timeout, limits=limits)
        )
        # Never used for streaming; passed so the SDKs do not build their own.
        sync_client = stack.enter_context(httpx.Client(timeout=timeout))
        common: dict[str, Any] = {
            "model": settings.resolved_model,
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "max_retries": settings.upstream_max_retries,
            "streaming": True,
            "http_async_client": async_client,
            "http_client": sync_client,
        }
        if provider == "openai":
            yield ChatOpenAI(
                api_key=settings.openai_api_key,
                base_url=settings.openai_base_url,
                # Ask for the final usage chunk even from non-default base URLs;
                # OpenAI-compatible servers that do not know the option ignore it.
                stream_usage=True,
                **common,
            )
        else:
            yield ChatGroq(
                api_key=settings.groq_api_key,
                base_url=settings.groq_base_url,
                **common,
            )
