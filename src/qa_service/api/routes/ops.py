"""The operations routes: prompts, metrics, liveness and readiness (native error shape)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from qa_service.api.deps import ServiceDep
from qa_service.api.dialects import NativeRoute
from qa_service.api.routes.get_and_head import get_and_head
from qa_service.api.schemas import native as schemas
from qa_service.core import errors
from qa_service.observability.telemetry import Telemetry

router = APIRouter(route_class=NativeRoute)
OPERATIONS = ["operations"]


@get_and_head(
    router,
    "/prompts",
    tags=["answers"],
    summary="List the prompts a request may name",
    responses=schemas.PROMPTS_RESPONSES,
)
async def list_prompts(service: ServiceDep) -> dict[str, Any]:
    """The prompts a request may name, each at the version in force, and the default."""
    in_force = service.prompts.in_force
    return {
        "default": service.settings.default_prompt,
        "prompts": [
            {"name": p.name, "description": p.description, "version": p.version}
            for p in sorted(in_force.values(), key=lambda p: p.name)
        ],
    }


@get_and_head(
    router,
    "/metrics",
    tags=OPERATIONS,
    summary="Prometheus metrics",
    responses=schemas.METRICS_RESPONSES,
    response_class=Response,
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    telemetry: Telemetry = request.app.state.telemetry
    return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)


@get_and_head(
    router, "/healthz", tags=OPERATIONS, summary="Liveness", responses=schemas.HEALTH_RESPONSES
)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers HTTP."""
    return {"status": "ok"}


@get_and_head(
    router,
    "/readyz",
    tags=OPERATIONS,
    summary="Readiness, and what a page may offer",
    responses=schemas.READINESS_RESPONSES,
)
async def readyz(service: ServiceDep) -> dict[str, Any]:
    """Readiness: the model is open and the service takes answers (else 503 not_ready);
    503 shutting_down from SIGTERM on, while the process drains (/healthz stays 200).

    With QA_READYZ_PROBE, the provider must also have answered `GET /models`
    within the last few seconds. The body also tells a page what to offer.
    """
    settings = service.settings
    if service.drain.draining:
        raise errors.NotReadyError(errors.SHUTTING_DOWN)
    if service.probe is not None and not await service.probe.ready():
        raise errors.NotReadyError(errors.PROVIDER_NOT_READY)
    ready: dict[str, Any] = {
        "status": "ready",
        "provider": settings.resolved_provider,
        "model": settings.resolved_model,
        "demo_fallback": settings.is_demo_fallback,
        "max_query_chars": settings.max_query_chars,
    }
    capabilities = service.capabilities
    if capabilities.notice is not None:
        ready["notice"] = capabilities.notice
    if capabilities.scenarios:
        ready["scenarios"] = list(capabilities.scenarios)
    return ready
