"""The answer routes: validate the request, then hand the answer to `answers`. Thin on purpose."""

from __future__ import annotations

import anyio
from asgi_correlation_id import correlation_id
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, ValidationError
from sse_starlette import EventSourceResponse

from qa_service.answers.streams import Answer, AnswerRequest, answer_events
from qa_service.api.deps import (
    STARTS_ANSWERS,
    Service,
    ServiceDep,
    body_limit,
    get_and_head,
    read_capped_body,
    require_json,
)
from qa_service.api.validation import (
    NOT_BLANK,
    describe_body_error,
    describe_query_string_error,
)
from qa_service.config import Settings
from qa_service.core import errors
from qa_service.core.events import AnswerMeta
from qa_service.generation.demo import DEMO_FALLBACK_NOTICE, SCENARIO_CONFIG_KEY, SCENARIOS
from qa_service.generation.prompts import PROMPT_NAME
from qa_service.wire import sse

router = APIRouter()


class AskBody(BaseModel):
    """`POST /ai_write` body: the same fields as the GET query string."""

    model_config = ConfigDict(extra="forbid")

    query: str | None = None
    prompt: str | None = None
    scenario: str | None = None


@get_and_head(router, "/ai_write", response_class=EventSourceResponse, dependencies=STARTS_ANSWERS)
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
    require_json(request)
    body = await read_capped_body(request, body_limit(service.settings))
    try:
        ask = AskBody.model_validate_json(body)
    except ValidationError as exc:
        problem = describe_body_error(exc, body)
        raise errors.invalid_request(problem) from None
    return start_answer(service, ask)


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
        ping_message_factory=sse.keepalive,
        sep=sse.LINE_SEPARATOR,
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
