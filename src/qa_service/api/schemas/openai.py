"""The OpenAI dialect's OpenAPI declarations (api/routes/openai.py names them).

Its bodies and errors are OpenAI's shapes, not ours, so they have their own
schema models.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from qa_service.api.schemas.models import Responses, add_models, ref


class OpenAIErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: Literal[
        "invalid_request_error", "authentication_error", "rate_limit_error", "server_error"
    ]
    param: None = None
    code: str = Field(description="Our stable code (docs/PROTOCOL.md), as on /ai_write.")


class OpenAIErrorBody(BaseModel):
    """OpenAI's error shape: a refusal, or a `data:` event of a failed stream."""

    model_config = ConfigDict(extra="forbid")

    error: OpenAIErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    refusal: None = None


class CompletionChoice(BaseModel):
    index: Literal[0]
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    """`stream: false`: the whole answer."""

    id: str = Field(pattern=r"^chatcmpl-")
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[CompletionChoice] = Field(min_length=1, max_length=1)
    usage: Usage | None = Field(description="null when the provider reported none.")


class Delta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: Literal[0]
    delta: Delta
    logprobs: None = None
    finish_reason: str | None


class ChatCompletionChunk(BaseModel):
    """One streamed chunk: the role, a piece of content, the finish reason,
    or (with `stream_options.include_usage`) the usage, with no choices."""

    id: str = Field(pattern=r"^chatcmpl-")
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChunkChoice] = Field(max_length=1)
    usage: Usage | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    OpenAIErrorBody,
    ChatCompletion,
    ChatCompletionChunk,
    Model,
    ModelList,
)

_STREAM_DESCRIPTION = """\
`stream: true`: Server-Sent Events, `data:` lines only (no `id:`, no `event:`):
`ChatCompletionChunk`s (the role first, then content pieces, then the finish
reason, then the usage when asked for), then `data: [DONE]`. A failure after
the stream started is one `OpenAIErrorBody` event. `: keep-alive` comment lines
come while the model is silent. `stream: false`: one `ChatCompletion`."""


def error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ref("OpenAIErrorBody")}},
    }


_UNAUTHORIZED = error("`unauthorized`: API keys are on and the request has no valid key.")
COMMON_ERRORS: Responses = {
    "401": _UNAUTHORIZED,
    "500": error("`internal_error`: a bug; the detail is in the service's log."),
    "503": error(
        "`not_ready`: the service is starting; `shutting_down` (Retry-After): it is "
        "draining after SIGTERM, ask again to reach another instance."
    ),
}
_COMPLETION_RESPONSES: Responses = {
    "200": {
        "description": _STREAM_DESCRIPTION,
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "data": {
                            "type": "string",
                            "description": "A ChatCompletionChunk or OpenAIErrorBody as "
                            "JSON, or the last event's `[DONE]`.",
                        }
                    },
                    "required": ["data"],
                }
            },
            "application/json": {"schema": ref("ChatCompletion")},
        },
    },
    **COMMON_ERRORS,
    "403": error("`cross_site_refused`: a browser page of another site."),
    "404": error("`model_not_found`: `model` is not one of GET /v1/models."),
    "409": error("`cancelled`: a `stream: false` answer was cancelled."),
    "413": error("`body_too_large`: the body is over the POST size cap."),
    "415": error("`unsupported_media_type`: the body is not declared as application/json."),
    "422": error(
        "Refused before any model call: `invalid_request` (the message names the field), "
        "`query_required`, `query_too_long` (the last user message), `history_too_long`."
    ),
    "429": error(
        "`rate_limited`, `budget_exhausted`, `too_many_streams` (Retry-After, "
        "x-ratelimit-* headers); or `upstream_rate_limited`."
    ),
    "502": error("The provider failed before the first text (`upstream_*`)."),
    "504": error("`upstream_timeout`: the provider did not answer before the first text."),
}
_QUESTION = [
    {"role": "user", "content": "What is photosynthesis?"},
    {"role": "assistant", "content": "How plants make sugar from light."},
    {"role": "user", "content": "Which gas do they take in?"},
]
_REQUEST_EXAMPLES = {
    "stream": {
        "summary": "Streamed, with usage",
        "value": {
            "model": "chat",
            "messages": _QUESTION,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    },
    "whole": {"summary": "One completion", "value": {"model": "explain", "messages": _QUESTION}},
}
MODEL_PARAMETER = {
    "name": "model",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A prompt name.",
}


def components(
    request_model: type[BaseModel],
    prompts: Iterable[str],
    models: Iterable[type[BaseModel]] = SCHEMA_MODELS,
) -> dict[str, Any]:
    """OpenAI's shapes (`models`: chat completions' by default), and the request
    body, whose `model` is one of the prompts."""
    schemas: dict[str, Any] = {}
    add_models(schemas, (*models, request_model))
    schemas[request_model.__name__]["properties"]["model"] = {
        "type": "string",
        "enum": sorted(prompts),
        "description": "A prompt name (GET /v1/models); it picks the prompt, not the LLM.",
    }
    return schemas


COMPLETION_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": ref("ChatCompletionRequest"),
            "examples": _REQUEST_EXAMPLES,
        }
    },
}
COMPLETION_RESPONSES: Responses = dict(sorted(_COMPLETION_RESPONSES.items(), key=str))
MODELS_RESPONSES: Responses = {
    "200": {
        "description": "Every prompt.",
        "content": {"application/json": {"schema": ref("ModelList")}},
    },
    **COMMON_ERRORS,
}
MODEL_RESPONSES: Responses = {
    "200": {
        "description": "The prompt.",
        "content": {"application/json": {"schema": ref("Model")}},
    },
    "404": error("`model_not_found`."),
    **COMMON_ERRORS,
}
