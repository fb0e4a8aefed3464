"""The OpenAI-compatible routes: POST /v1/chat/completions and GET /v1/models.

The same answers as /ai_write (api/opening.py: keys, limits, budgets,
metrics, logs), for clients that already speak OpenAI's API: the official
SDKs, LangChain's ChatOpenAI, LibreChat, Open WebUI. `model` names one of our
prompts. docs/PROTOCOL.md, "OpenAI chat completions", is the contract.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from qa_service.answers.model import AnswerRequest, answer_ref
from qa_service.api.asks import checked_history, checked_model, checked_query, read_json_body
from qa_service.api.auth import require_key
from qa_service.api.deps import Service, ServiceDep
from qa_service.api.dialects import OpenAIAnswerRoute, OpenAIRoute
from qa_service.api.error_handlers import METHODS, allowed_methods
from qa_service.api.guards import STARTS_DIALECT_ANSWERS
from qa_service.api.openapi.facts import StartUpFacts
from qa_service.api.opening import open_answer
from qa_service.api.schemas import openai as schemas
from qa_service.api.whole_answer import whole_answer
from qa_service.core import errors
from qa_service.core.errors import PublicError
from qa_service.generation.history import Turn
from qa_service.wire import openai_chat, sse

# A refused completion is a refused answer; the models are not answers.
answer_routes = APIRouter(route_class=OpenAIAnswerRoute, tags=["OpenAI-compatible"])
model_routes = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible"])

# Sent when the request's own system (or developer) messages were left out.
IGNORED_SYSTEM_HEADER = "x-qa-ignored-system-messages"
# A model's `created`: our models are the prompts loaded when the process started.
_LOADED_AT = int(time.time())


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    # Extra fields (`name`, and whatever newer clients add) are ignored, as
    # OpenAI-compatible servers do; what changes the meaning is refused below.
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool | None = None


class ChatCompletionRequest(BaseModel):
    """The fields we act on. Sampling fields (temperature, max_tokens, top_p,
    stop, seed, user, ...) are accepted and ignored: the service's
    configuration decides them, as it does for /ai_write."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None


def components(facts: StartUpFacts) -> dict[str, Any]:
    """OpenAI's shapes, and the request body, whose `model` is one of the prompts."""
    return schemas.components(ChatCompletionRequest, facts.prompts)


@answer_routes.post(
    "/v1/chat/completions",
    operation_id="create_chat_completion",
    response_class=EventSourceResponse,
    summary="An answer as an OpenAI chat completion, streamed or whole",
    responses=schemas.COMPLETION_RESPONSES,
    openapi_extra={"requestBody": schemas.COMPLETION_REQUEST_BODY},
    dependencies=STARTS_DIALECT_ANSWERS,
)
async def create_chat_completion(service: ServiceDep, request: Request) -> Response:
    """An answer as an OpenAI chat completion: streamed as `chat.completion.chunk`s
    with `stream: true`, else one `chat.completion`. `model` is a prompt name
    (GET /v1/models); the last message is the question, earlier ones the history."""
    body = await read_json_body(service, request, ChatCompletionRequest)
    answer_request = _checked_chat(service, body)
    # No chat-completions client can come back for its answer: its hang-up
    # cancels it at once, with no resume grace paid for (docs/PROTOCOL.md).
    opened = await open_answer(service, answer_request, request, resumable=False)
    completion = openai_chat.Completion(
        id=openai_chat.completion_id(answer_ref(opened.answer_id)),
        created=int(time.time()),
        model=body.model,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )
    headers = dict(opened.headers)
    ignored = sum(m.role in ("system", "developer") for m in body.messages)
    if ignored:
        headers[IGNORED_SYSTEM_HEADER] = str(ignored)
    response: Response
    if body.stream:
        events = openai_chat.render_stream(opened.events, completion)
        response = sse.event_stream_response(events, service.settings, opened.shutdown)
    else:
        result = await whole_answer(opened, request)
        if isinstance(result, PublicError):
            response = OpenAIRoute.error_response(result)
        else:
            text, summary = result
            response = JSONResponse(openai_chat.whole_completion(completion, text, summary))
    response.headers.update(headers)
    return response


@model_routes.get(
    "/v1/models",
    operation_id="list_models",
    summary="The prompts, as OpenAI models",
    responses=schemas.MODELS_RESPONSES,
    dependencies=[Depends(require_key)],
)
async def list_models(service: ServiceDep) -> dict[str, Any]:
    """Our prompts, as OpenAI models: each is a `model` a completion may name."""
    return {"object": "list", "data": [_model(name) for name in service.prompts.names()]}


@model_routes.get(
    "/v1/models/{model}",
    operation_id="retrieve_model",
    summary="One prompt, as an OpenAI model",
    responses=schemas.MODEL_RESPONSES,
    openapi_extra={"parameters": [schemas.MODEL_PARAMETER]},
    dependencies=[Depends(require_key)],
)
async def retrieve_model(service: ServiceDep, model: str) -> dict[str, Any]:
    """One prompt, as an OpenAI model."""
    checked_model(service, model)
    return _model(model)


def _model(name: str) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": _LOADED_AT,
        "owned_by": "qa-service",
    }


def _checked_chat(service: Service, body: ChatCompletionRequest) -> AnswerRequest:
    """The answer the request asks for; refused before any upstream call."""
    prompt = checked_model(service, body.model)
    if body.n is not None and body.n != 1:
        raise errors.invalid_request("n: only 1 choice is supported")
    if body.tools or body.functions:
        raise errors.invalid_request("tools: not supported")
    conversation = [m for m in body.messages if m.role not in ("system", "developer")]
    if not conversation or conversation[-1].role != "user":
        raise errors.invalid_request("messages: the last message must be the user's question")
    turns = [_turn(m) for m in conversation]
    settings = service.settings
    return AnswerRequest(
        question=checked_query(turns[-1].content, settings.max_query_chars),
        prompt=prompt.name,
        configurable={},
        history=checked_history(turns[:-1], settings),
        prompt_version=prompt.version,
    )


def _turn(message: ChatMessage) -> Turn:
    if message.role not in ("user", "assistant"):
        raise errors.invalid_request(f"messages: {message.role} messages are not supported")
    content = message.content
    if isinstance(content, list):
        if any(part.type != "text" or part.text is None for part in content):
            raise errors.invalid_request("messages: only text content is supported")
        content = "".join(part.text or "" for part in content)
    if content is None:
        raise errors.invalid_request("messages: content is required")
    return Turn(message.role, content)


# Last: every other path under /v1 is OpenAI's too, so its clients get their error
# shape for an unknown path or a wrong method there, as for everything else.
unknown_routes = APIRouter(route_class=OpenAIRoute, include_in_schema=False)


@unknown_routes.api_route("/v1/{path:path}", methods=list(METHODS))
async def unknown_path(request: Request) -> None:
    allowed = allowed_methods(request, excluding=request.scope.get("route"))
    if allowed:
        raise errors.QAServiceError(errors.METHOD_NOT_ALLOWED, {"Allow": allowed})
    raise errors.QAServiceError(errors.NOT_FOUND)


# The OpenAI surface, in the order /openapi.json lists it.
router = APIRouter()
router.include_router(answer_routes)
router.include_router(model_routes)
router.include_router(unknown_routes)
