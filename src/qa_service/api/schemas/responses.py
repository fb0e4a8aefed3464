"""The Responses dialect's OpenAPI declarations (api/routes/responses.py names them).

The shapes are OpenAI's (the Open Responses specification types them in full);
these models say what this service sends in them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from qa_service.api.schemas import openai
from qa_service.api.schemas.models import Responses, ref
from qa_service.api.schemas.openai import COMMON_ERRORS, OpenAIErrorBody, error

# The largest `starting_after` taken (a log holds far fewer events).
MAX_SEQUENCE_NUMBER = 999_999_999


class OutputText(BaseModel):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[Any]


class OutputMessage(BaseModel):
    type: Literal["message"]
    id: str = Field(pattern=r"^msg_")
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"]
    content: list[OutputText] = Field(max_length=1)


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseError(BaseModel):
    code: str = Field(description="Our stable code (docs/PROTOCOL.md), as on /ai_write.")
    message: str


class ResponseObject(BaseModel):
    """A response: its output message so far, and, once ended, its usage or error."""

    id: str = Field(pattern=r"^resp_")
    object: Literal["response"]
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed", "cancelled"]
    error: ResponseError | None
    incomplete_details: dict[str, str] | None
    model: str = Field(description="The prompt name the request gave.")
    output: list[OutputMessage] = Field(max_length=1)
    max_output_tokens: int | None
    previous_response_id: str | None
    store: bool
    usage: ResponseUsage | None = Field(
        description="null until it ends, or when the provider reported none."
    )


class ResponseStreamEvent(BaseModel):
    """One streamed event: its `type` (also its SSE `event:` name), a strictly
    increasing `sequence_number`, and the type's own fields (OpenAI's)."""

    model_config = {"extra": "allow"}

    type: Literal[
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
        "response.incomplete",
        "response.failed",
    ]
    sequence_number: int


SCHEMA_MODELS: tuple[type[BaseModel], ...] = (OpenAIErrorBody, ResponseObject, ResponseStreamEvent)

_STREAM = {
    "schema": {
        "type": "object",
        "properties": {
            "event": {"type": "string", "description": "The event's `type`."},
            "data": {"type": "string", "description": "A ResponseStreamEvent as JSON."},
        },
        "required": ["event", "data"],
    }
}
_STREAM_DESCRIPTION = """\
`stream: true`: Server-Sent Events, each an `event:` and a `data:` line: \
response.created, response.in_progress, response.output_item.added, \
response.content_part.added, response.output_text.delta..., response.output_text.done, \
response.content_part.done, response.output_item.done, then response.completed (with \
usage) or response.incomplete (cut at the output cap); or, after a failure, \
response.failed (with our code). No `[DONE]`. `: keep-alive` comment lines come while \
the model is silent. `stream: false`: one ResponseObject."""

_CREATE_RESPONSES: Responses = {
    "200": {
        "description": _STREAM_DESCRIPTION,
        "content": {
            "text/event-stream": _STREAM,
            "application/json": {"schema": ref("ResponseObject")},
        },
        "links": {
            "retrieve": {
                "operationId": "retrieve_response",
                "parameters": {"response_id": "$response.body#/id"},
            },
            "cancel": {
                "operationId": "cancel_response",
                "parameters": {"response_id": "$response.body#/id"},
            },
        },
    },
    **COMMON_ERRORS,
    "400": error(
        "Refused before any model call: `invalid_request` (tools, `n`, non-text input, "
        "background; the message names the field), `query_required`, `query_too_long` (the "
        "last user message), `history_too_long`."
    ),
    "403": error("`cross_site_refused`: a browser page of another site."),
    "404": error(
        "`model_not_found`: `model` is not one of GET /v1/models; `previous_response_not_found`."
    ),
    "409": error("`cancelled`: a `stream: false` answer was cancelled."),
    "413": error("`body_too_large`: the body is over the POST size cap."),
    "415": error("`unsupported_media_type`: the body is not declared as application/json."),
    "429": error(
        "`rate_limited`, `budget_exhausted`, `too_many_streams` (Retry-After, "
        "x-ratelimit-* headers); or `upstream_rate_limited`."
    ),
    "502": error("The provider failed before the first text (`upstream_*`)."),
    "504": error("`upstream_timeout`: the provider did not answer before the first text."),
}
_NOT_FOUND = error(
    "`response_not_found`: no stored response of this client by that id (never made, "
    "`store: false`, expired, or another client's)."
)
_RETRIEVE_RESPONSES: Responses = {
    "200": {
        "description": "The response as it stands; with `stream=true`, its events after "
        "`starting_after`, then live, as POST /v1/responses streams them.",
        "content": {
            "application/json": {"schema": ref("ResponseObject")},
            "text/event-stream": _STREAM,
        },
    },
    "400": error(
        "`invalid_request`: `starting_after` out of range, or a number this response has not sent."
    ),
    "404": _NOT_FOUND,
    "429": error("`too_many_readers`: past the readers' bounds for the response or client."),
    **COMMON_ERRORS,
    "503": error(
        "`store_unavailable`: the answer store cannot be reached, or is too far behind the "
        "instance writing the response to resume it; `not_ready`, `shutting_down` as "
        "everywhere. Retryable."
    ),
}
_CANCEL_RESPONSES: Responses = {
    "200": {
        "description": "The response, cancelled (or as it had already ended).",
        "content": {"application/json": {"schema": ref("ResponseObject")}},
    },
    "404": _NOT_FOUND,
    **COMMON_ERRORS,
}
RESPONSE_ID_PARAMETER = {
    "name": "response_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^resp_[0-9a-f]{48}$"},
    "description": "The response's `id`.",
}
RETRIEVE_PARAMETERS = [
    RESPONSE_ID_PARAMETER,
    {
        "name": "stream",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": "Send the response's events (replay, then live) instead of the object.",
    },
    {
        "name": "starting_after",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQUENCE_NUMBER},
        "description": "With `stream=true`: send the events after this `sequence_number`.",
    },
]
_EXAMPLES = {
    "stream": {
        "summary": "Streamed",
        "value": {"model": "chat", "input": "What is photosynthesis?", "stream": True},
    },
    "conversation": {
        "summary": "Continuing a stored response",
        "value": {
            "model": "chat",
            "input": [{"role": "user", "content": "Which gas do plants take in?"}],
            "previous_response_id": "resp_" + "0" * 48,
        },
    },
}


def components(request_model: type[BaseModel], prompts: Iterable[str]) -> dict[str, Any]:
    """The Responses shapes, and the request body, whose `model` is one of the prompts."""
    return openai.components(request_model, prompts, SCHEMA_MODELS)


CREATE_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": ref("CreateResponseRequest"), "examples": _EXAMPLES}
    },
}
CREATE_RESPONSES: Responses = dict(sorted(_CREATE_RESPONSES.items(), key=str))
RETRIEVE_RESPONSES: Responses = dict(sorted(_RETRIEVE_RESPONSES.items(), key=str))
CANCEL_RESPONSES: Responses = dict(sorted(_CANCEL_RESPONSES.items(), key=str))
