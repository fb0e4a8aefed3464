"""The native dialect's answer routes: /ai_write (GET, HEAD, POST), an answer's events
(the resume of a `fetch` client) and its cancel. Validate the request, then hand
the answer to `answers`. Thin on purpose; docs/PROTOCOL.md is the contract."""

from __future__ import annotations

from typing import NoReturn

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from qa_service.answers.model import ANSWER_ID, AnswerRequest
from qa_service.answers.registry import CancelResult
from qa_service.api.asks import (
    ask_from_query_string,
    checked_request,
    read_ask_body,
    resumes,
)
from qa_service.api.auth import ticketed_request
from qa_service.api.deps import Service, ServiceDep, client_of
from qa_service.api.dialects import NativeAnswerRoute, NativeRoute
from qa_service.api.guards import STARTS_ANSWERS
from qa_service.api.openapi.facts import start_up_parameters
from qa_service.api.opening import open_answer
from qa_service.api.routes.get_and_head import get_and_head
from qa_service.api.schemas import native as schemas
from qa_service.core import errors
from qa_service.wire import native, sse

# The surface's components, for /openapi.json (api/openapi/).
components = schemas.components

# Refusals here are refused answers (qa_requests_total{outcome="refused"}).
answer_routes = APIRouter(route_class=NativeAnswerRoute, tags=["answers"])
resume_routes = APIRouter(route_class=NativeRoute, tags=["answers"])

# The largest seq an event id can carry (9 digits, as Last-Event-ID allows).
MAX_SEQ = 999_999_999


@get_and_head(
    answer_routes,
    "/ai_write",
    response_class=EventSourceResponse,
    summary="Stream an answer as Server-Sent Events",
    responses=schemas.stream_responses("get"),
    head_responses=schemas.stream_responses("head"),
    openapi_extra={
        "parameters": [
            start_up_parameters(),
            schemas.TICKET_PARAMETER,
            schemas.LAST_EVENT_ID,
            schemas.CACHE_CONTROL,
        ]
    },
    dependencies=STARTS_ANSWERS,
)
async def ai_write(service: ServiceDep, request: Request) -> Response:
    """Stream an answer to `query` as Server-Sent Events (docs/PROTOCOL.md).

    With a `Last-Event-ID` header (an `EventSource` reconnecting sends it by
    itself), continue that answer after that event instead of asking anew.
    """
    # HEAD is checked like GET; sse-starlette then sends only the stream's
    # headers and never runs the answer (its Issue #218).
    ask = ask_from_query_string(request)
    # A ticketed GET's query string was checked when its ticket was redeemed (api/auth.py).
    answer_request = ticketed_request(request) or checked_request(service, ask)
    return await start_answer(service, answer_request, ask.scenario, request)


@answer_routes.post(
    "/ai_write",
    response_class=EventSourceResponse,
    operation_id="ai_write_post",
    summary="Stream an answer as Server-Sent Events (a JSON body, for long questions)",
    responses=schemas.stream_responses("post"),
    openapi_extra={
        "requestBody": schemas.ASK_BODY,
        "parameters": [schemas.LAST_EVENT_ID, schemas.CACHE_CONTROL],
    },
    dependencies=STARTS_ANSWERS,
)
async def ai_write_post(service: ServiceDep, request: Request) -> Response:
    """The same stream, for long questions: a JSON body `{"query": ..., ...}`."""
    ask = await read_ask_body(service, request)
    return await start_answer(service, checked_request(service, ask), ask.scenario, request)


async def start_answer(
    service: Service, answer_request: AnswerRequest, scenario: str | None, request: Request
) -> Response:
    """Resume the answer Last-Event-ID names, or open a new stream."""
    resume = last_event_id(service, request)
    if resume is not None:
        return await continue_answer(service, *resume, answer_request, client_of(request))
    if request.method == "HEAD":
        # Checked like GET, then only the stream's headers: never a paid answer.
        return sse.event_stream_response(sse.no_events(), service.settings, anyio.Event())
    opened = await open_answer(service, answer_request, request, scenario=scenario)
    response = sse.event_stream_response(
        native.render_stream(opened.events, opened.answer_id), service.settings, opened.shutdown
    )
    response.headers.update(opened.headers)
    return response


@get_and_head(
    resume_routes,
    "/answers/{answer_id}/events",
    response_class=EventSourceResponse,
    summary="Read an answer's events: replay, then live",
    responses=schemas.resume_responses("get"),
    openapi_extra={
        "parameters": [schemas.ANSWER_ID_PARAMETER, schemas.AFTER_PARAMETER, schemas.LAST_EVENT_ID]
    },
)
async def answer_events_route(
    service: ServiceDep, request: Request, answer_id: str, after: int | None = None
) -> Response:
    """An answer's events after `after` (or after the `Last-Event-ID` header's
    event; from its start without either): how a `fetch` client resumes."""
    if not ANSWER_ID.fullmatch(answer_id):
        # The answer first, then which of its events: a 404 says more than a 400.
        _refuse_resume(service, errors.ANSWER_NOT_FOUND)
    resume = last_event_id(service, request)
    if resume is not None:
        if resume[0] != answer_id:
            _refuse_resume(service, errors.INVALID_LAST_EVENT_ID)
        after = resume[1]
    if after is None:
        after = -1
    if not -1 <= after <= MAX_SEQ:
        raise errors.invalid_request(f"after: must be -1 to {MAX_SEQ}")
    return await continue_answer(service, answer_id, after, None, client_of(request))


@resume_routes.post(
    "/answers/{answer_id}/cancel",
    operation_id="cancel_answer",
    summary="Cancel an answer, on whichever replica runs it",
    responses=schemas.CANCEL_RESPONSES,
    openapi_extra={"parameters": [schemas.ANSWER_ID_PARAMETER]},
)
async def cancel_answer(service: ServiceDep, answer_id: str) -> dict[str, str]:
    """Stop an answer on whichever replica generates it. No body needed, so a
    closing page can send it with `navigator.sendBeacon`."""
    if not ANSWER_ID.fullmatch(answer_id):
        raise errors.QAServiceError(errors.ANSWER_NOT_FOUND)
    if service.answer_spans is not None:
        service.answer_spans.link(answer_id, "cancel")
    result = await service.registry.cancel(answer_id)
    if result is CancelResult.CANCELLED:
        service.telemetry.cancel_requested()
    return {"answer_id": answer_id, "status": result.value}


def last_event_id(service: Service, request: Request) -> tuple[str, int] | None:
    """The (answer id, seq) a reconnecting client names, or None for a new answer."""
    if not resumes(request):
        return None
    value = request.headers["last-event-id"]
    parsed = native.parse_event_id(value)
    if parsed is None or not ANSWER_ID.fullmatch(parsed[0]):
        _refuse_resume(service, errors.INVALID_LAST_EVENT_ID)
    return parsed


def _refuse_resume(service: Service, public: errors.PublicError) -> NoReturn:
    service.telemetry.resume_refused(public.code)
    raise errors.QAServiceError(public)


async def continue_answer(
    service: Service, answer_id: str, after: int, request: AnswerRequest | None, client: str
) -> Response:
    """Resume: 204 when everything was delivered; else replay, then follow live.

    `answer_id` is well-formed (the callers check it). Refused (JSON 4xx) for
    an unknown or expired answer, when `request` is given, for an answer to
    another request, and past the readers' bounds for the answer or `client`.
    """
    shutdown = anyio.Event()
    try:
        point = await service.registry.resume_point(answer_id, after, request)
        if point.delivered_all:
            # A browser's EventSource stops reconnecting on a 204.
            service.telemetry.resumed(point.replayed)
            return Response(status_code=204)
        events = service.connection_events(answer_id, after, shutdown, resumed_by=client)
    except errors.QAServiceError as exc:
        service.telemetry.resume_refused(exc.public.code)
        raise
    service.telemetry.resumed(point.replayed)
    if service.answer_spans is not None:
        service.answer_spans.link(answer_id, "resume")
    return sse.event_stream_response(
        native.render_stream(events, answer_id), service.settings, shutdown
    )


# The native surface, in the order /openapi.json lists it.
router = APIRouter()
router.include_router(answer_routes)
router.include_router(resume_routes)
