"""The browser side: the demo page, the JS client, security headers and CORS."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from secure import (
    ContentSecurityPolicy,
    CrossOriginOpenerPolicy,
    ReferrerPolicy,
    Secure,
    XContentTypeOptions,
    XFrameOptions,
)
from secure.middleware import SecureASGIMiddleware
from starlette.middleware.cors import CORSMiddleware

from qa_service.config import Settings

STATIC = Path(__file__).parents[2] / "static"
# fastapi-offline ships Swagger UI's files; only the files are used, not its app class.
SWAGGER_UI = Path(fastapi_offline.__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


@router.api_route("/qa-client.js", methods=["GET", "HEAD"])
async def client_module() -> FileResponse:
    """The client at a stable address, for `import { streamAnswer } from ".../qa-client.js"`."""
    return FileResponse(STATIC / "qa-client.js", media_type="text/javascript; charset=utf-8")


@router.api_route("/docs", methods=["GET", "HEAD"])
async def api_docs() -> FileResponse:
    """Swagger UI for /openapi.json, with no CDN (FastAPI's own /docs loads one)."""
    return FileResponse(STATIC / "docs.html", media_type="text/html; charset=utf-8")


@router.api_route("/redoc", methods=["GET", "HEAD"])
async def redoc() -> RedirectResponse:
    """One API page is kept, not two: /redoc leads to /docs."""
    return RedirectResponse("/docs", status_code=308)


@router.api_route("/favicon.ico", methods=["GET", "HEAD"])
async def favicon() -> FileResponse:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


def security_headers() -> Secure:
    """Headers for every response. No inline script or style: the page has none.

    Cache-Control is left alone on purpose: the event stream sets its own.
    """
    csp = (
        ContentSecurityPolicy()
        .default_src("'self'")
        .script_src("'self'")
        .style_src("'self'")
        .img_src("'self'")
        .connect_src("'self'")
        .base_uri("'none'")
        .form_action("'self'")
        .frame_ancestors("'none'")
        .object_src("'none'")
    )
    return Secure(
        csp=csp,
        xcto=XContentTypeOptions().nosniff(),
        xfo=XFrameOptions().deny(),
        referrer=ReferrerPolicy().no_referrer(),
        coop=CrossOriginOpenerPolicy().same_origin(),
    )


def install_web(app: FastAPI, settings: Settings) -> None:
    """Routes for the page and the client, then the middleware for browsers."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Content-Type",
                "Accept",
                "Authorization",
                "Last-Event-ID",
                "X-Request-ID",
                # no-cache / no-store for the answer cache: not a safelisted header.
                "Cache-Control",
            ],
            # What a cross-origin client needs to read: its request id, when to
            # ask again and its limits (an SDK's retry reads Retry-After), and
            # the OpenAI dialect's note of left-out system messages, and what
            # the answer cache did.
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                *(
                    f"x-ratelimit-{what}-{unit}"
                    for what in ("limit", "remaining", "reset")
                    for unit in ("requests", "tokens")
                ),
                "x-qa-ignored-system-messages",
                "x-qa-cache",
            ],
            max_age=600,
        )
    app.add_middleware(SecureASGIMiddleware, secure=security_headers())
