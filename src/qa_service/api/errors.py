"""Exception handlers: every refusal is a JSON body with a stable code."""

from __future__ import annotations

import logging
import math
from typing import Final, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from qa_service.core import errors
from qa_service.core.errors import AnswerFailedEarlyError, PublicError, QAServiceError
from qa_service.observability.logs import is_send_timeout
from qa_service.observability.telemetry import Telemetry
from qa_service.wire import openai_chat

log = logging.getLogger(__name__)

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Where a refusal is a refused answer (qa_requests_total{outcome="refused"}), in every dialect.
ANSWER_PATHS = frozenset({"/ai_write", "/v1/chat/completions", "/api/chat"})

# The error bodies: ours, or OpenAI's shape for its clients under /v1/.
Dialect = Literal["native", "openai"]
NATIVE: Final = "native"
OPENAI: Final = "openai"


def dialect_of(request: Request) -> Dialect:
    return OPENAI if request.url.path.startswith("/v1/") else NATIVE


def install_error_handlers(app: FastAPI) -> None:
    def refuse(request: Request, public: PublicError) -> JSONResponse:
        if request.url.path in ANSWER_PATHS:
            telemetry: Telemetry = request.app.state.telemetry
            telemetry.refused(public.code)
        return error_response(public, dialect_of(request))

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QAServiceError)
        if isinstance(exc, AnswerFailedEarlyError):
            # Counted once, as the answer it was.
            response = error_response(exc.public, dialect_of(request))
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
            return error_response(errors.INTERNAL)  # never sent: the response has started
        log.error("unhandled error exception=%s path=%s", type(exc).__name__, request.url.path)
        return error_response(errors.INTERNAL, dialect_of(request))

    app.add_exception_handler(QAServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def allowed_methods(request: Request) -> str:
    """Every method some route takes at this path, for a 405's `Allow` header.

    Starlette answers 405 from the first route whose path matched, and names
    only that route's methods: `DELETE /ai_write` would say `Allow: GET, HEAD`
    and hide POST. StaticFiles sends no `Allow` at all. So every route is
    asked about every method.
    """
    # Inside a mount the scope's root_path has grown; match from the app's.
    scope = {**request.scope, "root_path": request.scope.get("app_root_path", "")}
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Mount):  # the static files: GET and HEAD
            if route.matches(scope)[0] != Match.NONE:
                methods |= {"GET", "HEAD"}
            continue
        for method in _METHODS:
            if route.matches({**scope, "method": method})[0] == Match.FULL:
                methods.add(method)
    return ", ".join(sorted(methods))


def error_response(public: PublicError, dialect: Dialect = NATIVE) -> JSONResponse:
    headers = {}
    if public.retry_after_seconds is not None:
        # Whole seconds, rounded up: a client that waits less is refused again.
        headers["Retry-After"] = str(math.ceil(public.retry_after_seconds))
    elif public.status == 429:
        # A 429 always says when to ask again, even when the provider did not.
        headers["Retry-After"] = "1"
    if public.status == 401:
        # RFC 9110 requires a challenge on every 401; RFC 6750 names the scheme.
        headers["WWW-Authenticate"] = 'Bearer realm="qa-service"'
    body = public.as_dict() if dialect == NATIVE else openai_chat.error_object(public)
    return JSONResponse({"error": body}, status_code=public.status, headers=headers)
