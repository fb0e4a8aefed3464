"""Exception handlers: every refusal is a JSON body with a stable code, in its route's dialect."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Mount

from qa_service.api.dialects import NativeRoute, route_class_of
from qa_service.core import errors
from qa_service.core.errors import AnswerFailedEarlyError, PublicError, QAServiceError
from qa_service.observability.logs import is_send_timeout
from qa_service.observability.telemetry import Telemetry

log = logging.getLogger(__name__)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install_error_handlers(app: FastAPI) -> None:
    def refuse(request: Request, public: PublicError) -> JSONResponse:
        route_class = route_class_of(request)
        if route_class.starts_answers:
            telemetry: Telemetry = request.app.state.telemetry
            telemetry.refused(public.code)
        return route_class.error_response(public)

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QAServiceError)
        if isinstance(exc, AnswerFailedEarlyError):
            # Counted once, as the answer it was.
            response = route_class_of(request).error_response(exc.public)
        else:
            response = refuse(request, exc.public)
        response.headers.update(exc.headers)
        return response

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        return refuse(request, errors.INVALID_REQUEST)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        known = {404: errors.NOT_FOUND, 405: errors.METHOD_NOT_ALLOWED}
        response = refuse(request, known.get(exc.status_code, errors.INVALID_REQUEST))
        if exc.status_code == 405:
            response.headers["Allow"] = allowed_methods(request)
        return response

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        if is_send_timeout(exc):
            # Not a bug: the client stopped reading (server.py resets it).
            log.warning("client stopped reading; its answer is cancelled, its connection reset")
            return NativeRoute.error_response(errors.INTERNAL)  # never sent: the response started
        # The route's template, not the path: a path can hold an id that reads an answer.
        route = request.scope.get("route")
        path = getattr(route, "path", "(no route)")
        log.error("unhandled error exception=%s route=%s", type(exc).__name__, path)
        return route_class_of(request).error_response(errors.INTERNAL)

    app.add_exception_handler(QAServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def allowed_methods(request: Request, excluding: BaseRoute | None = None) -> str:
    """Every method some route takes at this path, for a 405's `Allow` header.

    Starlette answers 405 from the first route whose path matched, and names
    only that route's methods: `DELETE /ai_write` would say `Allow: GET, HEAD`
    and hide POST. StaticFiles sends no `Allow` at all. So every route is
    asked about every method (but `excluding`, a catch-all that asks).
    """
    # Inside a mount the scope's root_path has grown; match from the app's.
    scope = {**request.scope, "root_path": request.scope.get("app_root_path", "")}
    methods: set[str] = set()
    # Each route as FastAPI matches it, through the routers that include it.
    for route in iter_route_contexts(request.app.router.routes):
        if route.original_route is excluding:
            continue
        if isinstance(route.original_route, Mount):  # the static files: GET and HEAD
            if route.matches(scope)[0] != Match.NONE:
                methods |= {"GET", "HEAD"}
            continue
        for method in METHODS:
            if route.matches({**scope, "method": method})[0] == Match.FULL:
                methods.add(method)
    return ", ".join(sorted(methods))
