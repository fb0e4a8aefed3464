"""create_app(settings): a fresh app, its lifespan, and its error handlers."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from qa_service import __version__, errors
from qa_service.api import Service, router
from qa_service.config import Settings
from qa_service.errors import PublicError, QAServiceError
from qa_service.logs import is_send_timeout
from qa_service.openapi import install_openapi
from qa_service.probe import build_probe
from qa_service.prompts import check_default, load_prompts
from qa_service.providers import open_chat_model
from qa_service.telemetry import Telemetry
from qa_service.web import install_web
from qa_service.writer import AIWriter, GenerationLimits

log = logging.getLogger(__name__)

# Ids from proxies (nginx's $request_id, uuids) are kept; anything else is
# replaced. No ':' allowed, since event ids are "<request id>:<seq>".
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def create_app(settings: Settings) -> FastAPI:
    """A new app for `settings`. Prompts are checked now, so bad ones stop start-up."""
    prompts = load_prompts(settings.prompts_dir)
    check_default(prompts, settings.default_prompt)
    telemetry = Telemetry(settings.resolved_provider, settings.resolved_model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_chat_model(settings) as model:
            limits = GenerationLimits(
                first_piece_seconds=settings.upstream_read_timeout_seconds,
                idle_seconds=settings.upstream_idle_timeout_seconds,
                max_pieces=settings.max_tokens,
            )
            writer = AIWriter(model, prompts, limits)
            probe = (
                build_probe(model, settings.readyz_probe_ttl_seconds)
                if settings.readyz_probe
                else None
            )
            app.state.service = Service(settings, writer, prompts, telemetry, probe)
            if settings.is_demo_fallback:
                log.warning(
                    "NO PROVIDER KEY SET: answering with the keyless DEMO provider. "
                    "Set OPENAI_API_KEY or GROQ_API_KEY (or QA_PROVIDER) for real answers."
                )
            # Port 0 means "any free port", which only uvicorn learns, later.
            where = f"; open {settings.local_url}/" if settings.port else ""
            log.info(
                "ready%s",
                where,
                extra={
                    "provider": settings.resolved_provider,
                    "model": settings.resolved_model,
                    "prompts": sorted(prompts),
                },
            )
            try:
                yield
            finally:
                app.state.service = None

    # FastAPI's /docs and /redoc load their scripts from a CDN, which the CSP
    # blocks and an offline machine cannot reach: web.py serves /docs instead.
    app = FastAPI(
        title="qa-service", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.service = None
    app.state.telemetry = telemetry
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Request-ID",
        validator=lambda value: bool(_REQUEST_ID.match(value)),
    )
    _install_error_handlers(app)
    app.include_router(router)
    install_web(app, settings)
    install_openapi(app, settings, prompts)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    def refuse(request: Request, public: PublicError) -> JSONResponse:
        if request.url.path == "/ai_write":
            telemetry: Telemetry = request.app.state.telemetry
            telemetry.refused(public.code)
        return error_response(public)

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QAServiceError)
        return refuse(request, exc.public)

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
        return error_response(errors.INTERNAL)

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


def error_response(public: PublicError) -> JSONResponse:
    headers = {}
    if public.retry_after_seconds is not None:
        headers["Retry-After"] = str(int(public.retry_after_seconds))
    return JSONResponse({"error": public.as_dict()}, status_code=public.status, headers=headers)
