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
from collections.abc import Sequence
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sse_starlette import EventSourceResponse

from qa_service.answers.model import AnswerRequest
from qa_service.answers.responses import ResponseRecord, new_item_id, new_response_id
from qa_service.api.asks import checked_history, checked_model, checked_query, read_json_body
from qa_service.api.auth import require_key
from qa_service.api.deps import Service, ServiceDep, client_of
from qa_service.api.dialects import OpenAIResponsesAnswerRoute, OpenAIResponsesRoute
from qa_service.api.guards import STARTS_DIALECT_ANSWERS
from qa_service.api.openapi.facts import StartUpFacts
from qa_service.api.opening import OpenedAnswer, open_answer
from qa_service.api.routes.openai import IGNORED_SYSTEM_HEADER
from qa_service.api.schemas import responses as schemas
from qa_service.api.whole_answer import whole_answer
from qa_service.core import errors
from qa_service.core.errors import PublicError, QAServiceError
from qa_service.core.events import Done, Text, is_terminal
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

# What a message's content parts may be: text in, text out; nothing else is answerable.
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# What an input item carries besides its text: an Agents SDK's assistant item
# repeats its id, status, type, role and empty annotations and logprobs.
ITEM_OVERHEAD_BYTES = 256
# How long a cancel waits for the answer's last event, to return it ended.
_CANCEL_SETTLES_SECONDS = 2.0
_CANCEL_POLL_SECONDS = 0.05


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None


class InputItem(BaseModel):
    """A message item (`type` "message", or left out). Items of other types
    (tool calls and their outputs, reasoning) cannot be answered by a text
    prompt, and are refused."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str | None = None
    role: str | None = None
    content: str | list[ContentPart] | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    # Structured output (json_object, json_schema) cannot be promised by a text prompt.
    type: Literal["text"]


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    format: TextFormat | None = None


class CreateResponseRequest(BaseModel):
    """The fields we act on. Sampling fields (temperature, top_p, reasoning,
    truncation, include, metadata, ...) are accepted and ignored: the
    service's configuration decides them, as it does for /ai_write."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    store: bool | None = True
    previous_response_id: str | None = None
    # Refused by their types where no answer could honour them: background runs
    # (a stored response resumes instead), tools, several outputs.
    background: Literal[False] | None = None
    tools: list[Any] | None = Field(default=None, max_length=0)
    n: Literal[1] | None = None
    text: TextOptions | None = None

    @field_validator("background", "n", mode="before")
    @classmethod
    def _not_an_equal_of_another_type(cls, value: Any, info: ValidationInfo) -> Any:
        # A Literal compares with ==, so False would take 0 and 1 would take true.
        wanted = bool if info.field_name == "background" else int
        if value is not None and (type(value) is not wanted):
            raise ValueError(f"must be {'a boolean' if wanted is bool else 'an integer'}")
        return value


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
    answer_request, turns = await _checked_response(service, body, previous)
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
    ignored = _ignored_system_messages(body)
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
    facts = _facts_of(service, record)
    if not stream:
        return JSONResponse((await _state_now(service, record)).response())
    after = -1 if starting_after is None else starting_after
    if not -1 <= after <= schemas.MAX_SEQUENCE_NUMBER:
        raise errors.invalid_request(f"starting_after: must be 0 to {schemas.MAX_SEQUENCE_NUMBER}")
    info = await service.registry.store.describe(record.answer_id)
    if info is None:
        raise QAServiceError(errors.RESPONSE_NOT_FOUND)
    position = openai_responses.log_position(after, info.final_seq)
    shutdown = anyio.Event()
    try:
        final = await service.registry.last_event(record.answer_id, info)
        if final is not None and after > openai_responses.last_number(final):
            # A number this response never sent (log_position would read it as
            # the ending's, and send nothing), as the registry refuses a live one's.
            raise QAServiceError(errors.INVALID_LAST_EVENT_ID)
        await service.registry.resume_point(record.answer_id, position, None)
        state = ResponseState(facts)
        # The text before the resume point: the ending repeats it whole.
        for event in await service.registry.store.read(record.answer_id, -1, 0):
            if event.seq > position:
                break
            state.take(event)
        events = service.connection_events(
            record.answer_id, position, shutdown, resumed_by=client_of(request)
        )
    except QAServiceError as exc:
        service.telemetry.resume_refused(exc.public.code)
        raise
    service.telemetry.resumed(max(0, info.last_seq - position))
    return sse.event_stream_response(
        openai_responses.render_stream(events, state, after), service.settings, shutdown
    )


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
    try:
        result = await service.registry.cancel(record.answer_id)
    except QAServiceError:
        raise QAServiceError(errors.RESPONSE_NOT_FOUND) from None
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
    record = ResponseRecord(
        response_id=facts.id,
        answer_id=opened.answer_id,
        client=client,
        item_id=facts.item_id,
        model=facts.model,
        created_at=facts.created_at,
        max_output_tokens=facts.max_output_tokens,
        previous_response_id=facts.previous_response_id,
        turns=turns,
    )
    try:
        await service.responses.keep(record)
    except BaseException:
        # It must not run on, unread and paid for.
        await opened.events.aclose()
        await service.registry.cancel(opened.answer_id, errors.STORE_UNAVAILABLE, "error")
        raise


async def _stored(service: Service, response_id: str, client: str) -> ResponseRecord:
    record = await service.responses.find(response_id, client)
    if record is None:
        raise QAServiceError(errors.RESPONSE_NOT_FOUND)
    return record


def _facts_of(service: Service, record: ResponseRecord) -> ResponseFacts:
    return ResponseFacts(
        id=record.response_id,
        item_id=record.item_id,
        created_at=record.created_at,
        model=record.model,
        max_output_tokens=record.max_output_tokens,
        previous_response_id=record.previous_response_id,
        store=True,
        temperature=service.settings.temperature,
    )


async def _state_now(service: Service, record: ResponseRecord) -> ResponseState:
    """The stored response as its answer's log stands now."""
    events = await service.registry.store.read(record.answer_id, -1, 0)
    if not events:
        raise QAServiceError(errors.RESPONSE_NOT_FOUND)
    state = ResponseState(_facts_of(service, record))
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
    events = await service.registry.store.read(record.answer_id, -1, 0)
    state = ResponseState(_facts_of(service, record))
    for event in events:
        state.take(event)
    if not events or not is_terminal(events[-1]) or state.error is not None:
        raise errors.invalid_request("previous_response_id: that response has not completed")
    return record, state.text


async def _checked_response(
    service: Service,
    body: CreateResponseRequest,
    previous: tuple[ResponseRecord, str] | None,
) -> tuple[AnswerRequest, tuple[Turn, ...]]:
    """The answer the request asks for, and the conversation it sends (what a
    stored response keeps); refused before any upstream call."""
    prompt = checked_model(service, body.model)
    earlier: list[Turn] = []
    if previous is not None:
        record, answer = previous
        earlier = [*record.turns, Turn("assistant", answer)]
    turns = [*earlier, *_turns_of(body.input)]
    if not turns or turns[-1].role != "user":
        raise errors.invalid_request("input: the last message must be the user's question")
    settings = service.settings
    question = checked_query(turns[-1].content, settings.max_query_chars)
    history = checked_history(turns[:-1], settings)
    cap = body.max_output_tokens
    if cap is not None and settings.max_tokens is not None and cap >= settings.max_tokens:
        cap = None  # QA_MAX_TOKENS already holds it
    answer_request = AnswerRequest(
        question=question,
        prompt=prompt.name,
        configurable={},
        history=history,
        prompt_version=prompt.version,
        max_tokens=cap,
    )
    return answer_request, (*history, Turn("user", question))


def _turns_of(input: str | Sequence[InputItem]) -> list[Turn]:
    if isinstance(input, str):
        return [Turn("user", input)]
    turns = []
    for index, item in enumerate(input):
        if item.type not in (None, "message"):
            raise errors.invalid_request(f"input.{index}: only message items are supported")
        if item.role in ("system", "developer"):
            continue  # left out, and said so (x-qa-ignored-system-messages)
        if item.role == "user":
            turns.append(Turn("user", _text_of(item, index)))
        elif item.role == "assistant":
            turns.append(Turn("assistant", _text_of(item, index)))
        else:
            raise errors.invalid_request(f"input.{index}.role: must be user or assistant")
    return turns


def _text_of(item: InputItem, index: int) -> str:
    content = item.content
    if content is None:
        raise errors.invalid_request(f"input.{index}.content: required")
    if isinstance(content, str):
        return content
    texts = []
    for part_index, part in enumerate(content):
        if part.type not in _TEXT_PARTS or part.text is None:
            raise errors.invalid_request(
                f"input.{index}.content.{part_index}: only text content is supported"
            )
        texts.append(part.text)
    return "".join(texts)


def _ignored_system_messages(body: CreateResponseRequest) -> int:
    items = body.input if isinstance(body.input, list) else []
    return (body.instructions is not None) + sum(
        item.role in ("system", "developer") for item in items
    )


# The Responses surface, in the order /openapi.json lists it.
router = APIRouter()
router.include_router(answer_routes)
router.include_router(stored_routes)
