"""The OpenAI Responses routes: POST /v1/responses, and a stored response's
retrieve (with its resume: `stream=true&starting_after=N`) and cancel.

What the official SDKs, `ChatOpenAI(use_responses_api=True)` and the Agents
SDK speak. Answers start through api/opening.py like every dialect's (keys,
limits, budgets, the cache, metrics, logs); wire/openai_responses.py renders
their events; answers/responses.py keeps what `store: true` stores.
docs/PROTOCOL.md, "OpenAI Responses", is the contract.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from qa_service.answers.responses import ResponseRecord, new_item_id, new_response_id
from qa_service.api.asks import read_json_body
from qa_service.api.auth import require_key
from qa_service.api.deps import Service, ServiceDep, client_of
from qa_service.api.dialects import OpenAIResponsesAnswerRoute, OpenAIResponsesRoute
from qa_service.api.guards import STARTS_DIALECT_ANSWERS
from qa_service.api.openapi.facts import StartUpFacts
from qa_service.api.opening import OpenedAnswer, open_answer
from qa_service.api.response_requests import (
    ITEM_OVERHEAD_BYTES,
    CreateResponseRequest,
    checked_response,
    ignored_system_messages,
)
from qa_service.api.routes.openai import IGNORED_SYSTEM_HEADER
from qa_service.api.schemas import responses as schemas
from qa_service.api.whole_answer import whole_answer
from qa_service.core import errors
from qa_service.core.errors import PublicError, QAServiceError
from qa_service.core.events import AnswerEvent, Done, Text
from qa_service.generation.history import Turn
from qa_service.wire import openai_responses, sse
from qa_service.wire.openai_responses import ResponseFacts, ResponseState

# A refused creation is a refused answer; a stored response's reads are not answers.
answer_routes = APIRouter(route_class=OpenAIResponsesAnswerRoute, tags=["OpenAI-compatible"])
# A stored response is its client's: with keys on, reading one needs the key that made it.
stored_routes = APIRouter(
    route_class=OpenAIResponsesRoute,
    tags=["OpenAI-compatible"],
    dependencies=[Depends(require_key)],
)

# A starting_after this response never sent (past its end, or past what it has sent).
_PAST_THE_END = errors.invalid_request(
    "starting_after: after the last event this response has sent"
)
# How long a cancel waits for the answer's last event, to return it ended.
_CANCEL_SETTLES_SECONDS = 2.0
_CANCEL_POLL_SECONDS = 0.05


def components(facts: StartUpFacts) -> dict[str, Any]:
    """The Responses shapes, and the request body, whose `model` is one of the prompts."""
    return schemas.components(CreateResponseRequest, facts.prompts)


@answer_routes.post(
    "/v1/responses",
    operation_id="create_response",
    response_class=EventSourceResponse,
    summary="An answer as an OpenAI response, streamed or whole",
    responses=schemas.CREATE_RESPONSES,
    openapi_extra={"requestBody": schemas.CREATE_REQUEST_BODY},
    dependencies=STARTS_DIALECT_ANSWERS,
)
async def create_response(service: ServiceDep, request: Request) -> Response:
    """An answer as an OpenAI response: streamed as `response.*` events with
    `stream: true`, else one `response` object. `model` is a prompt name
    (GET /v1/models); the last user message of `input` is the question, the
    turns before it (and `previous_response_id`'s) the history."""
    overhead = service.settings.max_history_messages * ITEM_OVERHEAD_BYTES
    body = await read_json_body(service, request, CreateResponseRequest, extra_bytes=overhead)
    client = client_of(request)
    previous = await _previous(service, body.previous_response_id, client)
    earlier = [*previous[0].turns, Turn("assistant", previous[1])] if previous else []
    answer_request, turns = checked_response(service, body, earlier)
    store = body.store is not False
    streamed = bool(body.stream)
    # A response nobody can come back to is cancelled when its client leaves.
    opened = await open_answer(service, answer_request, request, resumable=store and streamed)
    facts = ResponseFacts(
        id=new_response_id(),
        item_id=new_item_id(),
        created_at=int(time.time()),
        model=body.model,
        max_output_tokens=body.max_output_tokens,
        previous_response_id=previous[0].response_id if previous else None,
        store=store,
        temperature=service.settings.temperature,
    )
    if store:
        await _keep(service, opened, facts, client, turns)
    state = ResponseState(facts)
    response: Response
    if streamed:
        events = openai_responses.render_stream(opened.events, state)
        response = sse.event_stream_response(events, service.settings, opened.shutdown)
    else:
        result = await whole_answer(opened, request)
        if isinstance(result, PublicError):
            return OpenAIResponsesRoute.error_response(result)
        text, summary = result
        state.take(Text(1, text))
        state.take(Done(2, summary))
        response = JSONResponse(state.response())
    response.headers.update(opened.headers)
    ignored = ignored_system_messages(body)
    if ignored:
        response.headers[IGNORED_SYSTEM_HEADER] = str(ignored)
    return response


@stored_routes.get(
    "/v1/responses/{response_id}",
    operation_id="retrieve_response",
    response_class=EventSourceResponse,
    summary="A stored response; with stream=true, its events (replay, then live)",
    responses=schemas.RETRIEVE_RESPONSES,
    openapi_extra={"parameters": schemas.RETRIEVE_PARAMETERS},
)
async def retrieve_response(
    service: ServiceDep,
    request: Request,
    response_id: str,
    stream: bool = False,
    starting_after: int | None = None,
) -> Response:
    """The response as it stands; with `stream=true`, its events after
    `starting_after` (from its start without it), then live, on any replica,
    with no new model call: how a client resumes a dropped stream."""
    record = await _stored(service, response_id, client_of(request))
    facts = record.facts
    if not stream:
        return JSONResponse((await _state_now(service, record)).response())
    after = -1 if starting_after is None else starting_after
    if not -1 <= after <= schemas.MAX_SEQUENCE_NUMBER:
        raise errors.invalid_request(f"starting_after: must be 0 to {schemas.MAX_SEQUENCE_NUMBER}")
    shutdown = anyio.Event()
    try:
        position, replayed = await _resume_position(service, record, after)
        state = ResponseState(facts)
        # The text before the resume point: the ending repeats it whole.
        for event in await _log_through(service, record, position):
            state.take(event)
        events = service.connection_events(
            record.answer_id, position, shutdown, resumed_by=client_of(request)
        )
    except QAServiceError as exc:
        service.telemetry.resume_refused(exc.public.code)
        raise
    service.telemetry.resumed(replayed)
    if service.answer_spans is not None:
        service.answer_spans.link(record.answer_id, "resume")
    return sse.event_stream_response(
        openai_responses.render_stream(events, state, after), service.settings, shutdown
    )


async def _resume_position(service: Service, record: ResponseRecord, after: int) -> tuple[int, int]:
    """The log seq to follow from for a resume after number `after`, and how many
    events that replays. The log is read once it holds the event that number
    belongs to: with Redis, a client fed from the producer's memory can be a
    batch ahead of the store, in the ending too."""
    registry = service.registry
    wanted = max(-1, after - openai_responses.TEXT_OFFSET)
    info = await registry.caught_up(record.answer_id, wanted)
    if info is None:
        raise QAServiceError(errors.RESPONSE_NOT_FOUND)
    final = await registry.last_event(record.answer_id, info)
    if final is not None and after > openai_responses.last_number(final):
        raise _past_the_end()
    position = openai_responses.log_position(after, info.final_seq)
    try:
        point = await registry.resume_point(record.answer_id, position, None)
    except QAServiceError as exc:
        # The registry words it for Last-Event-ID, which this client never sent.
        if exc.public is errors.INVALID_LAST_EVENT_ID:
            raise _past_the_end() from None
        raise
    return position, point.replayed


def _past_the_end() -> QAServiceError:
    """A starting_after this response never sent: past its end, or past what it has sent."""
    return errors.invalid_request("starting_after: after the last event this response has sent")


async def _log_through(service: Service, record: ResponseRecord, seq: int) -> list[AnswerEvent]:
    """The response's log through `seq`, which it must hold: a resume renders
    its ending with all the text before it."""
    events = [e for e in await service.registry.log_through(record.answer_id, seq) if e.seq <= seq]
    if (events[-1].seq if events else -1) < seq:
        # The store is too far behind its producer to say what came before.
        raise QAServiceError(errors.STORE_UNAVAILABLE)
    return events


@stored_routes.post(
    "/v1/responses/{response_id}/cancel",
    operation_id="cancel_response",
    summary="Cancel a response, on whichever replica writes it",
    responses=schemas.CANCEL_RESPONSES,
    openapi_extra={"parameters": [schemas.RESPONSE_ID_PARAMETER]},
)
async def cancel_response(service: ServiceDep, request: Request, response_id: str) -> Response:
    """Stop the response's answer wherever it runs; the response as it ended.
    An answer already ended stays as it was."""
    record = await _stored(service, response_id, client_of(request))
    if service.answer_spans is not None:
        service.answer_spans.link(record.answer_id, "cancel")
    try:
        result = await service.registry.cancel(record.answer_id)
    except QAServiceError as exc:
        if exc.public is errors.ANSWER_NOT_FOUND:  # its log expired before its record
            raise QAServiceError(errors.RESPONSE_NOT_FOUND) from None
        raise
    if result.value == "cancelled":
        service.telemetry.cancel_requested()
    state = await _state_now(service, record)
    # Another replica's answer ends when it hears the request: wait for that, briefly.
    with anyio.move_on_after(_CANCEL_SETTLES_SECONDS):
        while state.status == "in_progress":
            await anyio.sleep(_CANCEL_POLL_SECONDS)
            state = await _state_now(service, record)
    return JSONResponse(state.response())


async def _keep(
    service: Service,
    opened: OpenedAnswer,
    facts: ResponseFacts,
    client: str,
    turns: tuple[Turn, ...],
) -> None:
    """Store the response for its client, or stop its answer: unstored, nobody
    could read it but this connection, and a failing store fails that too."""
    record = ResponseRecord(opened.answer_id, client, facts, turns)
    try:
        await service.responses.keep(record)
    except BaseException:
        # It must not run on, unread and paid for; shielded, as this may be
        # the request's own cancellation (its client gone).
        with anyio.CancelScope(shield=True), suppress(QAServiceError):
            await opened.events.aclose()
            await service.registry.cancel(opened.answer_id, errors.STORE_UNAVAILABLE, "error")
        raise


async def _stored(service: Service, response_id: str, client: str) -> ResponseRecord:
    record = await service.responses.find(response_id, client)
    if record is None:
        raise QAServiceError(errors.RESPONSE_NOT_FOUND)
    return record


async def _state_now(service: Service, record: ResponseRecord) -> ResponseState:
    """The stored response as its answer's log stands now."""
    events = await service.registry.log_through(record.answer_id)
    if not events:
        raise QAServiceError(errors.RESPONSE_NOT_FOUND)
    state = ResponseState(record.facts)
    for event in events:
        state.take(event)
    return state


async def _previous(
    service: Service, response_id: str | None, client: str
) -> tuple[ResponseRecord, str] | None:
    """The response `previous_response_id` names and its answer's text; refused
    (404) when it is not this client's, and (400) when it did not complete."""
    if response_id is None:
        return None
    record = await service.responses.find(response_id, client)
    if record is None:
        raise QAServiceError(errors.PREVIOUS_RESPONSE_NOT_FOUND)
    state = await _state_now(service, record)
    if state.status not in ("completed", "incomplete"):
        raise errors.invalid_request("previous_response_id: that response has not completed")
    return record, state.text


# The Responses surface, in the order /openapi.json lists it.
router = APIRouter()
router.include_router(answer_routes)
router.include_router(stored_routes)
