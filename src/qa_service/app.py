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
from sse_starlette.sse import SendTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from qa_service import __version__, errors
from qa_service.api import Service, router
from qa_service.config import Settings
from qa_service.errors import PublicError, QAServiceError
from qa_service.prompts import check_default, load_prompts
from qa_service.providers import open_chat_model
from qa_service.telemetry import Telemetry
from qa_service.web import install_web
from qa_service.writer import AIWriter, GenerationLimits

log = logging.getLogger(__name__)

# Ids from proxies (nginx's $request_id, uuids) are kept; anything else is
# replaced. No ':' allowed, since event ids are "<request id>:<seq>".
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


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
            app.state.service = Service(settings, writer, prompts, telemetry)
            if settings.is_demo_fallback:
                log.warning(
                    "NO PROVIDER KEY SET: answering with the keyless DEMO provider. "
                    "Set OPENAI_API_KEY or GROQ_API_KEY (or QA_PROVIDER) for real answers."
                )
            log.info(
                "ready",
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

    app = FastAPI(title="qa-service", version=__version__, lifespan=lifespan)
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
        return refuse(request, known.get(exc.status_code, errors.INVALID_REQUEST))

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, SendTimeoutError):
            # Not a bug: the client stopped reading (server.py resets it).
            log.warning("client stopped reading; its answer is cancelled, its connection reset")
            return error_response(errors.INTERNAL)  # never sent: the response has started
        log.error("unhandled error exception=%s path=%s", type(exc).__name__, request.url.path)
        return error_response(errors.INTERNAL)

    app.add_exception_handler(QAServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def error_response(public: PublicError) -> JSONResponse:
    headers = {}
    if public.retry_after_seconds is not None:
        headers["Retry-After"] = str(int(public.retry_after_seconds))
    return JSONResponse({"error": public.as_dict()}, status_code=public.status, headers=headers)
