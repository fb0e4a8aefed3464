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

from qa_service.api.openapi_models import (
    EVENT_MODELS,
    SCHEMA_MODELS,
    STREAM_DESCRIPTION,
    STREAM_EXAMPLE,
    add_models,
    ref,
)
from qa_service.api.openapi_openai import describe_openai_operations
from qa_service.api.openapi_vercel import (
    CHAT,
    CHAT_RESUME,
    KEYED_CHAT_OPERATIONS,
    add_chat_schemas,
    chat_operation,
)
from qa_service.api.validation import NOT_BLANK_PATTERN
from qa_service.config import Settings
from qa_service.generation.demo import SCENARIOS


def install_openapi(app: FastAPI, settings: Settings, prompts: Iterable[str]) -> None:
    """Serve build_openapi's schema at /openapi.json, built on first use."""
    scenarios = SCENARIOS if settings.resolved_provider == "demo" else None
    names = sorted(prompts)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, settings, names, scenarios)
            if settings.auth_enabled:
                require_bearer(app.openapi_schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_openapi(
    app: FastAPI, settings: Settings, prompts: Iterable[str], scenarios: Iterable[str] | None
) -> dict[str, Any]:
    """The schema FastAPI generates, with every operation described as it behaves."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary="An LLM's answer, streamed as Server-Sent Events.",
        description="The event protocol: docs/PROTOCOL.md. A demo page is served at `/`.",
        routes=app.routes,
    )
    prompts = list(prompts)
    fields = _ask_fields(settings.max_query_chars, prompts, scenarios)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # FastAPI's validation error shape is never sent: refusals are ErrorBody.
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    add_models(components, SCHEMA_MODELS)
    components["StreamEvent"] = {
        "title": "StreamEvent",
        "description": "One event of the stream; its `data` is one JSON object with one key.",
        "type": "object",
        "properties": {
            "id": {
                "type": "string",
                "pattern": r"^[A-Za-z0-9_-]{22}:[0-9]+$",
                "description": "`<answer id>:<seq>`; absent on an event for this "
                "connection only (a replica's shutting_down, store_unavailable).",
            },
            "event": {"type": "string", "enum": ["message"]},
            "retry": {"type": "integer", "description": "On the first event: reconnect delay."},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"oneOf": [ref(model.__name__) for model in EVENT_MODELS]},
            },
        },
        "required": ["data"],
    }
    components["AskBody"] = {
        "title": "AskBody",
        "description": "The same fields as the GET query string.",
        "type": "object",
        # JSON null for an optional field is the same as leaving it out (AskBody).
        "properties": {
            **{
                name: field if name == "query" else _or_null(field)
                for name, field in fields.items()
            },
            "history": _history_field(settings.max_history_messages),
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    add_chat_schemas(components, _or_null(fields["prompt"]))
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            _describe_operation(operation, path, method, fields)
    describe_openai_operations(schema, prompts)
    return schema


# The operations that start an answer, or buy one in advance (api/guards.py).
KEYED_OPERATIONS = (
    ("/ai_write", "get"),
    ("/ai_write", "head"),
    ("/ai_write", "post"),
    ("/stream-tickets", "post"),
    ("/v1/chat/completions", "post"),
    ("/v1/models", "get"),
    ("/v1/models/{model}", "get"),
)


def require_bearer(schema: dict[str, Any]) -> None:
    """With API keys on: say which operations need `Authorization: Bearer`, so
    that /docs offers an Authorize button. GET and HEAD /ai_write may use a `ticket` instead."""
    schemes = schema["components"].setdefault("securitySchemes", {})
    schemes["apiKey"] = {"type": "http", "scheme": "bearer", "description": "An API key."}
    for path, method in (*KEYED_OPERATIONS, *KEYED_CHAT_OPERATIONS):
        alternatives: list[dict[str, list[str]]] = [{"apiKey": []}]
        if path == "/ai_write" and method != "post":
            alternatives.append({})  # or the `ticket` query parameter
        schema["paths"][path][method]["security"] = alternatives


def _describe_operation(
    operation: dict[str, Any], path: str, method: str, fields: dict[str, dict[str, Any]]
) -> None:
    if path in (CHAT, CHAT_RESUME):
        chat_operation(path, operation, _stream_responses("post"))
        return
    responses = _responses_for(path, method)
    if responses is None:
        return
    summary, tags = _SUMMARIES[path]
    if method == "head":
        summary += " (headers only)"
    operation.update(summary=summary, tags=tags, responses=responses)
    if path == "/answers/{answer_id}/events":
        operation["parameters"] = [_ANSWER_ID_PARAMETER, _AFTER_PARAMETER, _LAST_EVENT_ID]
    if path == "/answers/{answer_id}/cancel":
        operation["parameters"] = [_ANSWER_ID_PARAMETER]
    if path == "/stream-tickets":
        operation["requestBody"] = _ASK_BODY
    if path != "/ai_write":
        return
    if method == "post":
        operation["summary"] += " (a JSON body, for long questions)"
        operation["requestBody"] = _ASK_BODY
        operation["parameters"] = [_LAST_EVENT_ID]
    else:
        operation["parameters"] = [
            {"name": name, "in": "query", "required": name == "query", "schema": field}
            for name, field in fields.items()
        ] + [_TICKET_PARAMETER, _LAST_EVENT_ID]


def _responses_for(path: str, method: str) -> dict[str, Any] | None:
    if path == "/ai_write":
        return _stream_responses(method)
    if path == "/answers/{answer_id}/events":
        return _resume_responses(method)
    if path == "/answers/{answer_id}/cancel":
        return _CANCEL_RESPONSES
    if path == "/stream-tickets":
        return _TICKET_RESPONSES
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


def _history_field(max_messages: int) -> dict[str, Any]:
    return {
        "type": ["array", "null"],
        "maxItems": max_messages,
        "description": "The conversation so far, oldest first (POST only); the new "
        "question stays in `query`. Trimmed to QA_MAX_HISTORY_TOKENS.",
        "items": {
            "type": "object",
            "properties": {
                "role": {"type": "string", "enum": ["user", "assistant"]},
                "content": {"type": "string"},
            },
            "required": ["role", "content"],
            "additionalProperties": False,
        },
    }


def _or_null(field: dict[str, Any]) -> dict[str, Any]:
    return {**field, "type": ["string", "null"], "enum": [*field["enum"], None]}


def _json(model: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(model)}}}


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
                "schema": ref("StreamEvent"),
                "example": STREAM_EXAMPLE,
            }
        },
    }
    responses: dict[str, Any] = {
        "200": ok,
        **_RESUME_REFUSALS,
        "409": _error("`resume_mismatch`: Last-Event-ID names an answer to a different request."),
        "422": _error(
            "Refused before any model call: `query_required`, `query_too_long`, "
            "`history_too_long`, `unknown_prompt`, `unknown_scenario`, `invalid_request`."
        ),
        "401": _UNAUTHORIZED,
        "403": _CROSS_SITE,
        "500": _error("`internal_error`: a bug; the detail is in the service's log."),
        "429": _error(
            "`rate_limited`, `budget_exhausted`, `too_many_streams` (this client's limits, "
            "with Retry-After and x-ratelimit-* headers); or `upstream_rate_limited`: the "
            "provider said 429 before the first text."
        ),
        "502": _error(
            "The provider failed before the first text: `upstream_auth_failed`, "
            "`upstream_bad_request`, `upstream_interrupted`, `upstream_incomplete`, "
            "`upstream_error`, `producer_lost`."
        ),
        "503": _error(
            "`over_capacity` (QA_MAX_STREAMS; Retry-After), `upstream_unavailable` (the "
            "provider failed or was unreachable before the first text), `store_unavailable`, "
            "`not_ready`, `shutting_down`. Retryable."
        ),
        "504": _error("`upstream_timeout`: the provider did not answer before the first text."),
    }
    if method == "post":
        responses["413"] = _BODY_TOO_LARGE
        responses["415"] = _NOT_JSON
    else:
        responses["414"] = _error(
            "`url_too_long`: a URL over 65,535 bytes; send the question with POST."
        )
    if method == "head":
        ok["description"] = "The stream's headers, without a body and without asking the model."
        return _without_bodies(responses)
    return dict(sorted(responses.items()))


def _resume_responses(method: str) -> dict[str, Any]:
    ok = copy.deepcopy(_stream_responses("get")["200"])
    ok["description"] = "The answer's events after `after` (or Last-Event-ID), then live."
    responses = {
        "200": ok,
        **_RESUME_REFUSALS,
        "422": _error("`invalid_request`: `after` is not an integer from -1 to 999999999."),
        "500": _error("`internal_error`: a bug; the detail is in the service's log."),
        "503": _STORE_OR_NOT_READY,
    }
    if method == "head":
        return _without_bodies(responses)
    return dict(sorted(responses.items()))


_SUMMARIES: dict[str, tuple[str, list[str]]] = {
    "/ai_write": ("Stream an answer as Server-Sent Events", ["answers"]),
    "/stream-tickets": ("Issue a single-use ticket for one GET /ai_write", ["answers"]),
    "/answers/{answer_id}/events": ("Read an answer's events: replay, then live", ["answers"]),
    "/answers/{answer_id}/cancel": ("Cancel an answer, on whichever replica runs it", ["answers"]),
    "/prompts": ("List the prompts a request may name", ["answers"]),
    "/healthz": ("Liveness", ["operations"]),
    "/readyz": ("Readiness, and what a page may offer", ["operations"]),
    "/metrics": ("Prometheus metrics", ["operations"]),
}
_NOT_READY = _error(
    "`not_ready`: the service is starting or stopping (or, with QA_READYZ_PROBE, "
    "the provider did not answer); retryable."
)
_STORE_OR_NOT_READY = _error(
    "`store_unavailable`: the answer store (Redis) cannot be reached; or `not_ready`. Retryable."
)
_UNAUTHORIZED = _error(
    "`unauthorized` (with `WWW-Authenticate: Bearer`): API keys are on and the request "
    "has no valid key; or a `ticket` is unknown, spent, expired or for another request."
)
_CROSS_SITE = _error(
    "`cross_site_refused`: a browser asked for a page of another site that "
    "QA_CORS_ORIGINS does not list."
)
_BODY_TOO_LARGE = _error(
    "`body_too_large`: larger than 12 * (QA_MAX_QUERY_CHARS + QA_MAX_HISTORY_CHARS) "
    "+ 64 * QA_MAX_HISTORY_MESSAGES + 4096 bytes."
)
_NOT_JSON = _error("`unsupported_media_type`: the body is not declared as application/json.")
_ASK_BODY = {
    "required": True,
    "content": {"application/json": {"schema": ref("AskBody")}},
}
_TICKET_RESPONSES: dict[str, Any] = {
    "200": _json("StreamTicket", "A ticket for this one request, until it expires."),
    "401": _UNAUTHORIZED,
    "403": _CROSS_SITE,
    "413": _BODY_TOO_LARGE,
    "415": _NOT_JSON,
    "422": _error(
        "Refused as POST /ai_write would refuse it: `query_required`, `query_too_long`, "
        "`unknown_prompt`, `unknown_scenario`, `invalid_request`."
    ),
    "500": _error("`internal_error`: a bug; the detail is in the service's log."),
    "503": _STORE_OR_NOT_READY,
}
_TICKET_PARAMETER = {
    "name": "ticket",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "A ticket from POST /stream-tickets for this same request: how a client "
    "that cannot send Authorization (EventSource) starts an answer when API keys are on.",
}
_RESUME_REFUSALS: dict[str, Any] = {
    "204": {"description": "Resumed after the answer's last event: nothing is left to send."},
    "400": _error("`invalid_last_event_id`: Last-Event-ID is not `<answer id>:<seq>`."),
    "404": _error("`answer_not_found`: no such answer, or it has expired."),
}
_CANCEL_RESPONSES: dict[str, Any] = {
    "200": _json("CancelResult", "Cancelled, or it had already finished."),
    "404": _error("`answer_not_found`: no such answer, or it has expired."),
    "500": _error("`internal_error`: a bug; the detail is in the service's log."),
    "503": _STORE_OR_NOT_READY,
}
_ANSWER_ID_PARAMETER = {
    "name": "answer_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "`meta.answer_id` of the answer (22 characters, base64url).",
}
_AFTER_PARAMETER = {
    "name": "after",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": -1, "maximum": 999_999_999},
    "description": "Send the events after this seq; without it (or Last-Event-ID), all.",
}
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    # Blank is taken as absent (answers.last_event_id); anything else is
    # refused with 400 invalid_last_event_id.
    "schema": {"type": "string", "pattern": r"^(\s*|[A-Za-z0-9_-]{22}:[0-9]{1,9})$"},
    "description": "Resume after this event (`<answer id>:<seq>`), as EventSource sends "
    "it. Blank is the same as no header.",
}
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
