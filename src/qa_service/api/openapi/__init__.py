"""What /openapi.json says: each route's own declarations, and one pass for what only
start-up knows.

FastAPI's generated schema was wrong in three ways (issue 10): the POST body
was not described (the route reads it itself, to cap its size), every 422 was
FastAPI's HTTPValidationError rather than our `{"error": {...}}`, and the 200
was not `text/event-stream`. So every route declares its body, parameters and
responses where it is defined (`openapi_extra=`, `responses=`), and this pass
adds only the facts start-up decides: the prompt names, the length limits, the
scenarios where the demo provider answers, and, with API keys on, which routes
need one. A test checks the result against real responses
(tests/integration/test_openapi.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from qa_service.api.auth import require_key, require_key_or_ticket
from qa_service.api.openapi.facts import ASK_QUERY_FIELDS, StartUpFacts

# A surface's components (api/schemas/native.py, and the routes of the other dialects), some of
# them built from the start-up facts.
Components = Callable[[StartUpFacts], dict[str, Any]]


def install_openapi(
    app: FastAPI, facts: StartUpFacts, components: Iterable[Components], *, keys_on: bool
) -> None:
    """Serve build_openapi's schema at /openapi.json, built on first use."""
    surfaces = tuple(components)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, facts, surfaces)
            if keys_on:
                require_bearer(app, app.openapi_schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_openapi(
    app: FastAPI, facts: StartUpFacts, surfaces: Iterable[Components]
) -> dict[str, Any]:
    """The schema FastAPI generates from the routes' declarations, with the start-up facts."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary="An LLM's answer, streamed as Server-Sent Events.",
        description="The event protocol: docs/PROTOCOL.md. A demo page is served at `/`.",
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # FastAPI's validation error shape is never sent: refusals are ErrorBody.
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for surface in surfaces:
        components.update(surface(facts))
    for route in _described(app):
        for method in route.methods or ():
            _as_declared(schema["paths"][route.path_format][method.lower()], route, facts)
    return schema


def _described(app: FastAPI) -> list[Any]:
    """The routes /openapi.json describes, as get_openapi walks them: through the
    included routers, each with its effective path, methods and declarations."""
    return [
        context
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and context.include_in_schema
    ]


def _as_declared(operation: dict[str, Any], route: Any, facts: StartUpFacts) -> None:
    """What the route declares replaces what FastAPI inferred beside it.

    FastAPI merges a route's `responses` into its own guesses (a 200 schema from
    the return type, a 422 HTTPValidationError that is never sent) and appends
    the `parameters` of `openapi_extra` to those it found in the signature;
    a route that declares them means exactly those.
    """
    if route.responses:
        operation["responses"] = {str(status): body for status, body in route.responses.items()}
    declared = (route.openapi_extra or {}).get("parameters")
    if declared is not None:
        operation["parameters"] = [
            expanded
            for parameter in declared
            for expanded in (
                facts.query_parameters() if ASK_QUERY_FIELDS in parameter else [parameter]
            )
        ]


def require_bearer(app: FastAPI, schema: dict[str, Any]) -> None:
    """With API keys on: say which operations need `Authorization: Bearer`, so that /docs
    offers an Authorize button: those guarded by a key check (api/guards.py). Where a
    `ticket` may stand in for the key (GET and HEAD /ai_write), a key is optional."""
    schemes = schema["components"].setdefault("securitySchemes", {})
    schemes["apiKey"] = {"type": "http", "scheme": "bearer", "description": "An API key."}
    for route in _described(app):
        guards = {dependency.call for dependency in route.original_route.dependant.dependencies}
        if not guards & {require_key, require_key_or_ticket}:
            continue
        for method in route.methods or ():
            alternatives: list[dict[str, list[str]]] = [{"apiKey": []}]
            if require_key_or_ticket in guards and method != "POST":
                alternatives.append({})  # or the `ticket` query parameter
            schema["paths"][route.path_format][method.lower()]["security"] = alternatives
