"""The provider readiness probe (QA_READYZ_PROBE): one cheap request, its result cached.

Without it, `/readyz` says only that the model client is open: a wrong key or
an unreachable provider shows up on the first answer. With it, `/readyz` asks
the provider's `GET {base}/models` (free, no tokens) through the chat model's
own SDK client, so the base URL, the key and our HTTP client are the ones
answers use. A load balancer polls every few seconds, so the result is kept
for `QA_READYZ_PROBE_TTL_SECONDS` and concurrent polls share one request.
With a fallback provider, the service is ready when either answers: the
fallback is there to serve while the primary is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from langchain_core.runnables import Runnable, RunnableWithFallbacks
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI

from qa_service.generation.failures import upstream_status

log = logging.getLogger(__name__)

PROBE_TIMEOUT = httpx.Timeout(5.0)


class ProviderProbe:
    """`await probe.ready()`: whether a provider (the primary or its fallback) answered
    `GET /models` lately."""

    def __init__(self, sdk_clients: list[Any], ttl_seconds: float) -> None:
        # No retries: a probe that fails says so now, and the next poll asks again.
        self._clients = [
            client.with_options(max_retries=0, timeout=PROBE_TIMEOUT) for client in sdk_clients
        ]
        self._ttl = ttl_seconds
        self._lock = asyncio.Lock()
        self._result = False
        self._expires = 0.0

    async def ready(self) -> bool:
        async with self._lock:
            if time.monotonic() >= self._expires:
                self._result = await self._ask_any()
                self._expires = time.monotonic() + self._ttl
            return self._result

    async def _ask_any(self) -> bool:
        for client in self._clients:
            if await self._ask(client):
                return True
        return False

    async def _ask(self, client: Any) -> bool:
        try:
            await client.models.list()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; cancellation passes
            # The type and status only: provider error text can echo the key.
            log.warning(
                "readiness probe failed exception=%s upstream_status=%s",
                type(exc).__name__,
                upstream_status(exc),
            )
            return False
        return True


def build_probe(model: Runnable[Any, Any], ttl_seconds: float) -> ProviderProbe | None:
    """A probe for the providers behind `model`; None for the demo, which has none."""
    models = (
        [model.runnable, *model.fallbacks] if isinstance(model, RunnableWithFallbacks) else [model]
    )
    clients = [client for client in map(_sdk_client, models) if client is not None]
    return ProviderProbe(clients, ttl_seconds) if clients else None


def _sdk_client(model: Runnable[Any, Any]) -> Any:
    if isinstance(model, ChatOpenAI):
        return model.root_async_client
    if isinstance(model, ChatGroq):
        # langchain-groq keeps only the `chat.completions` resource; its
        # `_client` is the AsyncGroq client built on our HTTP client.
        return model.async_client._client
    return None
