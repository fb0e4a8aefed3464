"""What /openapi.json says: the POST body, our error shape, and the event stream.

FastAPI's generated schema was wrong in three ways (issue 10): the POST body
was not described (the route reads it itself, to cap its size), every 422 was
FastAPI's HTTPValidationError rather than our `{"error": {...}}`, and the
200 was not `text/event-stream`. This module rewrites each operation from the
facts the service enforces: the query's length limit, the prompt names loaded
at start-up, and the scenarios only where the demo provider answers. A test
checks the result against real responses (tests/integration/test_openapi.py).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from qa_service.api.validation import NOT_BLANK_PATTERN
from qa_service.config import Settings
from qa_service.core.events import AnswerMeta, AnswerSummary
from qa_service.generation.demo import SCENARIOS

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    """A stable `code` to program against, a `message` safe to show, and whether to retry."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(examples=["query_required"])
    message: str = Field(examples=["The query is missing or blank."])
    retryable: bool
    retry_after_seconds: float | None = Field(
        default=None, description="Present when the provider said how long to wait."
    )


class ErrorBody(BaseModel):
    """A refusal before the stream starts, and the last event of a failed stream."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class MetaEvent(BaseModel):
    """First event of every stream: who is answering."""

    model_config = ConfigDict(extra="forbid")

    meta: AnswerMeta


class TextEvent(BaseModel):
    """The next piece of the answer; join them all, in order, for the exact text."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)


class DoneEvent(BaseModel):
    """Last event of a complete answer."""

    model_config = ConfigDict(extra="forbid")

    done: AnswerSummary


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class PromptInfo(BaseModel):
    name: str
    description: str


class PromptList(BaseModel):
    default: str
    prompts: list[PromptInfo]


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    provider: str
    model: str
    demo_fallback: bool
    max_query_chars: int = Field(description="The longest query accepted, in characters.")
    notice: str | None = Field(default=None, description="Only when the demo is a fallback.")
    scenarios: list[str] | None = Field(default=None, description="Only on the demo provider.")


EVENT_MODELS: tuple[type[BaseModel], ...] = (MetaEvent, TextEvent, DoneEvent, ErrorBody)
SCHEMA_MODELS: tuple[type[BaseModel], ...] = (*EVENT_MODELS, Health, PromptList, Readiness)

STREAM_EXAMPLE = (
    "id: 3f1c9a5e2b7d4e0f8a6b1c2d3e4f5a6b:0\n"
    'data: {"meta":{"request_id":"3f1c9a5e2b7d4e0f8a6b1c2d3e4f5a6b","provider":"openai",'
    '"model":"gpt-4o-mini","prompt":"explain","demo_fallback":false}}\n\n'
    "id: 3f1c9a5e2b7d4e0f8a6b1c2d3e4f5a6b:1\n"
    'data: {"text":"Photosynthesis is"}\n\n'
    ": keep-alive\n"
    "id: 3f1c9a5e2b7d4e0f8a6b1c2d3e4f5a6b:2\n"
    'data: {"text":" how plants turn light into sugar."}\n\n'
    "id: 3f1c9a5e2b7d4e0f8a6b1c2d3e4f5a6b:3\n"
    'data: {"done":{"finish_reason":"stop","usage":{"input_tokens":31,"output_tokens":9,'
    '"total_tokens":40},"ttft_ms":412.7,"chars":51,"duration_ms":904.1}}\n\n'
)

STREAM_DESCRIPTION = """\
Server-Sent Events. Each event is unnamed (type `message`) and has an `id`
(`<request id>:<seq>`) and one `data` line: a JSON object with one key.

| key | how many | schema |
|---|---|---|
| `meta` | exactly 1, first | `MetaEvent` |
| `text` | 0 or more | `TextEvent` |
| `done` | 0 or 1, last | `DoneEvent` |
| `error` | 0 or 1, last | `ErrorBody` (a failure after the stream started) |

Every stream ends with one `done` or one `error`. While the model is silent
the server sends `: keep-alive` comment lines. The whole contract is
docs/PROTOCOL.md in the repository."""


def install_openapi(app: FastAPI, settings: Settings, prompts: Iterable[str]) -> None:
    """Serve build_openapi's schema at /openapi.json, built on first use."""
    scenarios = SCENARIOS if settings.resolved_provider == "demo" else None
    names = sorted(prompts)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, settings.max_query_chars, names, scenarios)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_openapi(
    app: FastAPI, max_chars: int, prompts: Iterable[str], scenarios: Iterable[str] | None
) -> dict[str, Any]:
    """The schema FastAPI generates, with every operation described as it behaves."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary="An LLM's answer, streamed as Server-Sent Events.",
        description="The event protocol: docs/PROTOCOL.md. A demo page is served at `/`.",
        routes=app.routes,
    )
    fields = _ask_fields(max_chars, prompts, scenarios)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # FastAPI's validation error shape is never sent: refusals are ErrorBody.
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for model in SCHEMA_MODELS:
        model_schema = model.model_json_schema(ref_template=REF)
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    components["StreamEvent"] = {
        "title": "StreamEvent",
        "description": "One event of the stream; its `data` is one JSON object with one key.",
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{8,64}:[0-9]+$"},
            "event": {"type": "string", "enum": ["message"]},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"oneOf": [_ref(model.__name__) for model in EVENT_MODELS]},
            },
        },
        "required": ["id", "data"],
    }
    components["AskBody"] = {
        "title": "AskBody",
        "description": "The same fields as the GET query string.",
        "type": "object",
        "properties": fields,
        "required": ["query"],
        "additionalProperties": False,
    }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            _describe_operation(operation, path, method, fields)
    return schema


def _describe_operation(
    operation: dict[str, Any], path: str, method: str, fields: dict[str, dict[str, Any]]
) -> None:
    responses = _responses_for(path, method)
    if responses is None:
        return
    summary, tags = _SUMMARIES[path]
    if method == "head":
        summary += " (headers only)"
    operation.update(summary=summary, tags=tags, responses=responses)
    if path != "/ai_write":
        return
    if method == "post":
        operation["summary"] += " (a JSON body, for long questions)"
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref("AskBody")}},
        }
    else:
        operation["parameters"] = [
            {"name": name, "in": "query", "required": name == "query", "schema": field}
            for name, field in fields.items()
        ]


def _responses_for(path: str, method: str) -> dict[str, Any] | None:
    if path == "/ai_write":
        return _stream_responses(method)
    get = _PLAIN.get(path)
    if get is None or method not in ("get", "head"):
        return None
    return get if method == "get" else _without_bodies(get)


def _without_bodies(responses: dict[str, Any]) -> dict[str, Any]:
    """HEAD: the same statuses and headers as GET, and no content."""
    head = copy.deepcopy(responses)
    for response in head.values():
        response.pop("content", None)
    return head


def _ask_fields(
    max_chars: int, prompts: Iterable[str], scenarios: Iterable[str] | None
) -> dict[str, dict[str, Any]]:
    fields: dict[str, dict[str, Any]] = {
        "query": {
            "type": "string",
            "minLength": 1,
            "maxLength": max_chars,
            "pattern": NOT_BLANK_PATTERN,
            "description": "The question, passed to the model exactly as sent; not blank.",
        },
        "prompt": {
            "type": "string",
            "enum": sorted(prompts),
            "description": "A prompt from GET /prompts; without it, the default prompt.",
        },
    }
    if scenarios is not None:
        fields["scenario"] = {
            "type": "string",
            "enum": list(scenarios),
            "description": "A demo scenario (offered by the demo provider only).",
        }
    return fields


def _ref(model: str) -> dict[str, str]:
    return {"$ref": REF.format(model=model)}


def _json(model: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("ErrorBody", description)


def _stream_responses(method: str) -> dict[str, Any]:
    ok: dict[str, Any] = {
        "description": STREAM_DESCRIPTION,
        "headers": {
            "X-Request-ID": {
                "description": "The request id, also in the meta event.",
                "schema": {"type": "string"},
            }
        },
        "content": {
            "text/event-stream": {
                # One event, as OpenAPI 3.2's itemSchema describes event streams
                # (3.1 has no itemSchema; validators such as schemathesis read
                # `schema` of an event stream this way).
                "schema": _ref("StreamEvent"),
                "example": STREAM_EXAMPLE,
            }
        },
    }
    responses: dict[str, Any] = {
        "200": ok,
        "422": _error(
            "Refused before any model call: `query_required`, `query_too_long`, "
            "`unknown_prompt`, `unknown_scenario`, `invalid_request`."
        ),
        "403": _error(
            "`cross_site_refused`: a browser asked for a page of another site that "
            "QA_CORS_ORIGINS does not list."
        ),
        "500": _error("`internal_error`: a bug; the detail is in the service's log."),
        "503": _NOT_READY,
    }
    if method == "post":
        responses["413"] = _error(
            "`body_too_large`: larger than 12 * QA_MAX_QUERY_CHARS + 4096 bytes."
        )
        responses["415"] = _error(
            "`unsupported_media_type`: the body is not declared as application/json."
        )
    else:
        responses["414"] = _error(
            "`url_too_long`: a URL over 65,535 bytes; send the question with POST."
        )
    if method == "head":
        ok["description"] = "The stream's headers, without a body and without asking the model."
        return _without_bodies(responses)
    return dict(sorted(responses.items()))


_SUMMARIES: dict[str, tuple[str, list[str]]] = {
    "/ai_write": ("Stream an answer as Server-Sent Events", ["answers"]),
    "/prompts": ("List the prompts a request may name", ["answers"]),
    "/healthz": ("Liveness", ["operations"]),
    "/readyz": ("Readiness, and what a page may offer", ["operations"]),
    "/metrics": ("Prometheus metrics", ["operations"]),
}
_NOT_READY = _error(
    "`not_ready`: the service is starting or stopping (or, with QA_READYZ_PROBE, "
    "the provider did not answer); retryable."
)
_PLAIN: dict[str, dict[str, Any]] = {
    "/healthz": {"200": _json("Health", "The process serves HTTP (liveness).")},
    "/readyz": {
        "200": _json("Readiness", "Ready to answer, and what a page may offer."),
        "503": _NOT_READY,
    },
    "/prompts": {
        "200": _json("PromptList", "The prompts a request may name."),
        "503": _NOT_READY,
    },
    "/metrics": {
        "200": {
            "description": "Prometheus metrics, in the text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
}
