"""The native dialect's OpenAPI declarations: /ai_write, its resume and cancel, the
stream tickets, and the operations routes. The routes (api/routes/native.py,
tickets.py, ops.py) name these where they are declared; docs/PROTOCOL.md is the contract.
"""

from __future__ import annotations

import copy
from typing import Any

from qa_service.api.openapi.facts import StartUpFacts, or_null
from qa_service.api.schemas.models import (
    EVENT_MODELS,
    SCHEMA_MODELS,
    STREAM_DESCRIPTION,
    STREAM_EXAMPLE,
    Responses,
    add_models,
    ref,
)


def components(facts: StartUpFacts) -> dict[str, Any]:
    """The error shape, the events and the plain bodies; the stream's event; and the
    POST body, whose fields are start-up facts."""
    fields = facts.ask_fields()
    components: dict[str, Any] = {}
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
                name: field if name == "query" else or_null(field) for name, field in fields.items()
            },
            "history": facts.history_field(),
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    return components


def without_bodies(responses: Responses) -> Responses:
    """HEAD: the same statuses and headers as GET, and no content."""
    head = copy.deepcopy(responses)
    for response in head.values():
        response.pop("content", None)
    return head


def json_body(model: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(model)}}}


def error(description: str) -> dict[str, Any]:
    return json_body("ErrorBody", description)


def stream_responses(method: str) -> Responses:
    ok: dict[str, Any] = {
        "description": STREAM_DESCRIPTION,
        "headers": {
            "X-Request-ID": {
                "description": "The request id, also in the meta event.",
                "schema": {"type": "string"},
            },
            "x-qa-cache": {
                "description": "With the answer cache on (QA_ANSWER_CACHE_TTL_SECONDS): what it "
                "did, as the meta event's `cache`.",
                "schema": {"type": "string", "enum": ["hit", "join", "miss", "bypass"]},
            },
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
    responses: Responses = {
        "200": ok,
        **_RESUME_REFUSALS,
        "409": error("`resume_mismatch`: Last-Event-ID names an answer to a different request."),
        "422": error(
            "Refused before any model call: `query_required`, `query_too_long`, "
            "`history_too_long`, `unknown_prompt`, `unknown_scenario`, `invalid_request`."
        ),
        "401": _UNAUTHORIZED,
        "403": _CROSS_SITE,
        "500": error("`internal_error`: a bug; the detail is in the service's log."),
        "429": error(
            "`rate_limited`, `budget_exhausted`, `too_many_streams` (this client's limits, "
            "with Retry-After and x-ratelimit-* headers); `too_many_readers` (a Last-Event-ID "
            "resume past the readers' bounds); or `upstream_rate_limited`: the "
            "provider said 429 before the first text."
        ),
        "502": error(
            "The provider failed before the first text: `upstream_auth_failed`, "
            "`upstream_bad_request`, `upstream_interrupted`, `upstream_incomplete`, "
            "`upstream_error`, `producer_lost`."
        ),
        "503": error(
            "`over_capacity` (QA_MAX_STREAMS; Retry-After), `upstream_unavailable` (the "
            "provider failed or was unreachable before the first text), `store_unavailable`, "
            "`not_ready`, `shutting_down` (the instance is draining after SIGTERM; "
            "Retry-After). Retryable."
        ),
        "504": error("`upstream_timeout`: the provider did not answer before the first text."),
    }
    if method == "post":
        responses["413"] = _BODY_TOO_LARGE
        responses["415"] = _NOT_JSON
    else:
        responses["414"] = error(
            "`url_too_long`: a URL over 65,535 bytes; send the question with POST."
        )
    if method == "head":
        ok["description"] = "The stream's headers, without a body and without asking the model."
        return without_bodies(responses)
    return dict(sorted(responses.items(), key=str))


def resume_responses(method: str) -> Responses:
    ok = copy.deepcopy(stream_responses("get")["200"])
    ok["description"] = "The answer's events after `after` (or Last-Event-ID), then live."
    responses = {
        "200": ok,
        **_RESUME_REFUSALS,
        "422": error("`invalid_request`: `after` is not an integer from -1 to 999999999."),
        "500": error("`internal_error`: a bug; the detail is in the service's log."),
        "503": _STORE_OR_NOT_READY,
    }
    if method == "head":
        return without_bodies(responses)
    return dict(sorted(responses.items(), key=str))


_NOT_READY = error(
    "`not_ready`: the service is starting or stopping (or, with QA_READYZ_PROBE, "
    "the provider did not answer); retryable."
)
_STORE_OR_NOT_READY = error(
    "`store_unavailable`: the answer store (Redis) cannot be reached; or `not_ready`. Retryable."
)
_UNAUTHORIZED = error(
    "`unauthorized` (with `WWW-Authenticate: Bearer`): API keys are on and the request "
    "has no valid key; or a `ticket` is unknown, spent, expired or for another request."
)
_CROSS_SITE = error(
    "`cross_site_refused`: a browser asked for a page of another site that "
    "QA_CORS_ORIGINS does not list."
)
_BODY_TOO_LARGE = error(
    "`body_too_large`: larger than 12 * (QA_MAX_QUERY_CHARS + QA_MAX_HISTORY_CHARS) "
    "+ 64 * QA_MAX_HISTORY_MESSAGES + 4096 bytes."
)
_NOT_JSON = error("`unsupported_media_type`: the body is not declared as application/json.")
ASK_BODY = {
    "required": True,
    "content": {"application/json": {"schema": ref("AskBody")}},
}
TICKET_RESPONSES: Responses = {
    "200": json_body("StreamTicket", "A ticket for this one request, until it expires."),
    "401": _UNAUTHORIZED,
    "403": _CROSS_SITE,
    "413": _BODY_TOO_LARGE,
    "415": _NOT_JSON,
    "422": error(
        "Refused as POST /ai_write would refuse it: `query_required`, `query_too_long`, "
        "`unknown_prompt`, `unknown_scenario`, `invalid_request`."
    ),
    "500": error("`internal_error`: a bug; the detail is in the service's log."),
    "503": _STORE_OR_NOT_READY,
}
TICKET_PARAMETER = {
    "name": "ticket",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "A ticket from POST /stream-tickets for this same request: how a client "
    "that cannot send Authorization (EventSource) starts an answer when API keys are on.",
}
TOO_MANY_READERS_RESPONSE = error(
    "`too_many_readers` (Retry-After): the answer has QA_MAX_READERS_PER_ANSWER readers "
    "on this instance, or this client QA_CLIENT_MAX_READERS resumes."
)
_RESUME_REFUSALS: Responses = {
    "204": {"description": "Resumed after the answer's last event: nothing is left to send."},
    "400": error("`invalid_last_event_id`: Last-Event-ID is not `<answer id>:<seq>`."),
    "404": error("`answer_not_found`: no such answer, or it has expired."),
    "429": TOO_MANY_READERS_RESPONSE,
}
CANCEL_RESPONSES: Responses = {
    "200": json_body("CancelResult", "Cancelled, or it had already finished."),
    "404": error("`answer_not_found`: no such answer, or it has expired."),
    "500": error("`internal_error`: a bug; the detail is in the service's log."),
    "503": _STORE_OR_NOT_READY,
}
ANSWER_ID_PARAMETER = {
    "name": "answer_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "`meta.answer_id` of the answer (22 characters, base64url).",
}
AFTER_PARAMETER = {
    "name": "after",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": -1, "maximum": 999_999_999},
    "description": "Send the events after this seq; without it (or Last-Event-ID), all.",
}
LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    # Blank is taken as absent (answers.last_event_id); anything else is
    # refused with 400 invalid_last_event_id.
    "schema": {"type": "string", "pattern": r"^(\s*|[A-Za-z0-9_-]{22}:[0-9]{1,9})$"},
    "description": "Resume after this event (`<answer id>:<seq>`), as EventSource sends "
    "it. Blank is the same as no header.",
}
CACHE_CONTROL = {
    "name": "Cache-Control",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "With the answer cache on: `no-cache` asks the provider afresh and keeps "
    "the answer; `no-store` asks afresh and keeps nothing. A `no-cache` sent with "
    "`Pragma: no-cache` is a browser's own (every EventSource sends the pair) and is "
    "ignored, as are other directives.",
}
HEALTH_RESPONSES: Responses = {
    "200": json_body("Health", "The process serves HTTP (liveness)."),
}
READINESS_RESPONSES: Responses = {
    "200": json_body("Readiness", "Ready to answer, and what a page may offer."),
    "503": error(
        "`shutting_down`: the instance is draining after SIGTERM (its answers in flight go "
        "on; /healthz still answers 200); or `not_ready`: it is starting (or, with "
        "QA_READYZ_PROBE, the provider did not answer); retryable."
    ),
}
PROMPTS_RESPONSES: Responses = {
    "200": json_body("PromptList", "The prompts a request may name."),
    "503": _NOT_READY,
}
METRICS_RESPONSES: Responses = {
    "200": {
        "description": "Prometheus metrics, in the text exposition format.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
