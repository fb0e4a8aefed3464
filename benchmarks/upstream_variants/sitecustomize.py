"""Swaps the service's provider HTTP client for a variant, in a benchmark's service process only.

benchmarks/transport.py starts a service with this directory on PYTHONPATH
and QA_BENCH_UPSTREAM_CLIENT set; Python imports `sitecustomize` at start-up,
before `python -m qa_service serve` runs, so the variant is in place without
a setting in the product for what is only measured. Variants:

- `http2`: the same httpx client with `http2=True` (needs h2; ALPN picks h2
  where the provider offers it);
- `aiohttp`: httpx's client over httpx-aiohttp's transport, as the openai SDK's
  `DefaultAioHttpClient` builds it, with the same limits, timeouts and hooks.

It says on stderr which it applied, so the benchmark can check its log.
"""

from __future__ import annotations

import os
import sys

VARIANT = os.environ.get("QA_BENCH_UPSTREAM_CLIENT")


def _install(variant: str) -> None:
    import httpx

    from qa_service.generation import providers, upstream

    build = upstream.build_async_client

    def build_variant(
        timeout: httpx.Timeout, limits: httpx.Limits, max_retry_wait: float
    ) -> httpx.AsyncClient:
        stock = build(timeout, limits, max_retry_wait)
        if variant == "http2":
            return httpx.AsyncClient(
                http2=True, timeout=timeout, limits=limits, event_hooks=stock.event_hooks
            )
        if variant == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            return httpx.AsyncClient(
                transport=AiohttpTransport(limits=limits),
                timeout=timeout,
                limits=limits,
                event_hooks=stock.event_hooks,
            )
        raise SystemExit(f"unknown QA_BENCH_UPSTREAM_CLIENT {variant!r}")

    providers.build_async_client = build_variant  # type: ignore[assignment]
    print(f"benchmark upstream client: {variant}", file=sys.stderr, flush=True)


if VARIANT:
    _install(VARIANT)
