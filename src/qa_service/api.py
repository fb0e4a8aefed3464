"""HTTP routes: validate the request, then hand the answer to `streams`. Thin on purpose."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
from asgi_correlation_id import correlation_id
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, ValidationError
from sse_starlette import EventSourceResponse

from qa_service import errors, events
from qa_service.config import Settings
from qa_service.demo import SCENARIO_CONFIG_KEY, SCENARIOS
from qa_service.events import AnswerMeta
from qa_service.origins import page_may_start_answers
from qa_service.probe import ProviderProbe
from qa_service.prompts import PROMPT_NAME, Prompt
from qa_service.streams import Answer, AnswerRequest, answer_events
from qa_service.telemetry import Telemetry
from qa_service.validation import NOT_BLANK, describe_body_error, describe_query_string_error
from qa_service.writer import AIWriter

DEMO_FALLBACK_NOTICE = (
    "No OPENAI_API_KEY or GROQ_API_KEY is set, so the keyless demo provider is "
    "answering. Its text is canned, not written by a language model."
)


@dataclass(frozen=True, slots=True)
class Service:
    """Everything a request needs, built once in the app's lifespan."""

    settings: Settings
    writer: AIWriter
    prompts: dict[str, Prompt]
    telemetry: Telemetry
    probe: ProviderProbe | None = None


class AskBody(BaseModel):
    """`POST /ai_write` body: the same fields as the GET query string."""

    model_config = ConfigDict(extra="forbid")

    query: str | None = None
    prompt: str | None = None
    scenario: str | None = None


def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise errors.NotReadyError(errors.NOT_READY)
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def refuse_pages_of_other_sites(request: Request, service: ServiceDep) -> None:
    """Only our own page and QA_CORS_ORIGINS' pages may start a paid answer (origins.py)."""
    own_origin = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if not page_may_start_answers(request.headers, own_origin, service.settings.cors_origins):
        raise errors.QAServiceError(errors.CROSS_SITE_REFUSED)


# On every route that starts an answer.
STARTS_ANSWERS = [Depends(refuse_pages_of_other_sites)]

router = APIRouter()

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def get_and_head(path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """`@router.get`, plus HEAD as its own route: one route with both methods
    would give the two OpenAPI operations the same operationId."""

    def register(endpoint: Endpoint) -> Endpoint:
        for method in ("GET", "HEAD"):
            operation_id = f"{endpoint.__name__}_{method.lower()}"
            router.add_api_route(
                path, endpoint, methods=[method], operation_id=operation_id, **options
            )
        return endpoint

    return register


@get_and_head("/ai_write", response_class=EventSourceResponse, dependencies=STARTS_ANSWERS)
async def ai_write(
    service: ServiceDep,
    request: Request,
    query: str | None = None,
    prompt: str | None = None,
    scenario: str | None = None,
) -> EventSourceResponse:
    """Stream an answer to `query` as Server-Sent Events (docs/PROTOCOL.md)."""
    problem = describe_query_string_error(request.query_params.multi_items(), AskBody.model_fields)
    if problem is not None:
        raise errors.invalid_request(problem)
    # HEAD is checked like GET; sse-starlette then sends only the stream's
    # headers and never runs the answer (its Issue #218).
    return start_answer(service, AskBody(query=query, prompt=prompt, scenario=scenario))


@router.post(
    "/ai_write",
    response_class=EventSourceResponse,
    operation_id="ai_write_post",
    dependencies=STARTS_ANSWERS,
)
async def ai_write_post(service: ServiceDep, request: Request) -> EventSourceResponse:
    """The same stream, for long questions: a JSON body `{"query": ..., ...}`."""
    _require_json(request)
    body = await _read_capped_body(request, _body_limit(service.settings))
    try:
        ask = AskBody.model_validate_json(body)
    except ValidationError as exc:
        problem = describe_body_error(exc, body)
        raise errors.invalid_request(problem) from None
    return start_answer(service, ask)


@get_and_head("/prompts")
async def list_prompts(service: ServiceDep) -> dict[str, Any]:
    """The prompts a request may name, and the default."""
    return {
        "default": service.settings.default_prompt,
        "prompts": [
            {"name": p.name, "description": p.description}
            for p in sorted(service.prompts.values(), key=lambda p: p.name)
        ],
    }


@get_and_head("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    telemetry: Telemetry = request.app.state.telemetry
    return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)


@get_and_head("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers HTTP."""
    return {"status": "ok"}


@get_and_head("/readyz")
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


def start_answer(service: Service, ask: AskBody) -> EventSourceResponse:
    """Refuse bad input before any upstream call; otherwise open the event stream."""
    settings = service.settings
    request = _checked_request(service, ask)
    prompt = request.prompt
    answer = Answer(
        AnswerMeta(
            request_id=correlation_id.get() or "",
            provider=settings.resolved_provider,
            model=settings.resolved_model,
            prompt=prompt,
            demo_fallback=settings.is_demo_fallback,
            notice=DEMO_FALLBACK_NOTICE if settings.is_demo_fallback else None,
            scenario=ask.scenario,
        ),
        service.writer,
        request,
        settings.upstream_close_timeout_seconds,
        observer=service.telemetry,
    )
    # Shutdown timeline (SIGTERM): sse-starlette notices within 0.5 s and sets
    # `shutdown`; answers get QA_SHUTDOWN_GRACE_SECONDS to finish, then end with
    # a shutting_down event; sse-starlette and uvicorn wait a little longer so
    # that event is delivered before they force anything.
    grace = settings.shutdown_grace_seconds
    shutdown = anyio.Event()
    return EventSourceResponse(
        answer_events(answer, shutdown, drain_seconds=grace),
        shutdown_event=shutdown,
        shutdown_grace_period=grace + 1,
        # sse-starlette defaults to no-store; no-cache is what proxies and
        # browsers are documented to honour for event streams.
        headers={"Cache-Control": "no-cache"},
        ping=settings.keepalive_seconds,
        ping_message_factory=events.keepalive,
        sep=events.LINE_SEPARATOR,
        send_timeout=settings.send_timeout_seconds,
    )


def _checked_request(service: Service, ask: AskBody) -> AnswerRequest:
    settings = service.settings
    return AnswerRequest(
        question=_checked_query(ask.query, settings.max_query_chars),
        prompt=_checked_prompt(ask.prompt, service),
        configurable=_checked_scenario(ask.scenario, settings),
    )


def _checked_query(query: str | None, limit: int) -> str:
    if query is None or not NOT_BLANK.search(query):
        raise errors.query_required()
    if len(query) > limit:
        raise errors.query_too_long(limit)
    return query


def _checked_prompt(name: str | None, service: Service) -> str:
    if name is None:
        return service.settings.default_prompt
    if not PROMPT_NAME.match(name) or name not in service.prompts:
        raise errors.unknown_prompt(
            name if PROMPT_NAME.match(name) else None, sorted(service.prompts)
        )
    return name


def _checked_scenario(scenario: str | None, settings: Settings) -> dict[str, str]:
    if scenario is None:
        return {}
    if settings.resolved_provider != "demo" or scenario not in SCENARIOS:
        raise errors.unknown_scenario(list(SCENARIOS))
    return {SCENARIO_CONFIG_KEY: scenario}


def _require_json(request: Request) -> None:
    # Only JSON: a form or text/plain POST is a "simple" cross-origin request
    # that browsers send from any page without a CORS preflight, so any site
    # could spend our provider budget through its visitors.
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise errors.QAServiceError(errors.UNSUPPORTED_MEDIA_TYPE)


def _body_limit(settings: Settings) -> int:
    # The worst case a character costs in JSON is 12 bytes: an astral one
    # (emoji) escaped as a surrogate pair, \ud83d\ude00, which is what
    # Python's json.dumps and requests send by default. Plus room for the other
    # fields. A bigger body is refused before it is buffered.
    return settings.max_query_chars * 12 + 4096


async def _read_capped_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.QAServiceError(errors.BODY_TOO_LARGE)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise errors.QAServiceError(errors.BODY_TOO_LARGE)
    return bytes(body)
