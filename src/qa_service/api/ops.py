"""Operations routes: prompts, metrics, liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qa_service.api.deps import ServiceDep, get_and_head
from qa_service.core import errors
from qa_service.generation.demo import DEMO_FALLBACK_NOTICE, SCENARIOS
from qa_service.observability.telemetry import Telemetry

router = APIRouter()


@get_and_head(router, "/prompts")
async def list_prompts(service: ServiceDep) -> dict[str, Any]:
    """The prompts a request may name, and the default."""
    return {
        "default": service.settings.default_prompt,
        "prompts": [
            {"name": p.name, "description": p.description}
            for p in sorted(service.prompts.values(), key=lambda p: p.name)
        ],
    }


@get_and_head(router, "/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    telemetry: Telemetry = request.app.state.telemetry
    return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)


@get_and_head(router, "/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers HTTP."""
    return {"status": "ok"}


@get_and_head(router, "/readyz")
async def readyz(service: ServiceDep) -> dict[str, Any]:
    """Readiness: the model is open and the service takes answers (else 503 not_ready).

    With QA_READYZ_PROBE, the provider must also have answered `GET /models`
    within the last few seconds. The body also tells a page what to offer.
    """
    settings = service.settings
    if service.probe is not None and not await service.probe.ready():
        raise errors.NotReadyError(errors.PROVIDER_NOT_READY)
    ready: dict[str, Any] = {
        "status": "ready",
        "provider": settings.resolved_provider,
        "model": settings.resolved_model,
        "demo_fallback": settings.is_demo_fallback,
        "max_query_chars": settings.max_query_chars,
    }
    if settings.is_demo_fallback:
        ready["notice"] = DEMO_FALLBACK_NOTICE
    if settings.resolved_provider == "demo":
        ready["scenarios"] = list(SCENARIOS)
    return ready
