"""What browsers get: the page and client with strict security headers, and CORS by allow-list.

Headers are checked on the app in this process (tests/support/in_process.py);
the stream's own headers, on the real service.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tests.integration.conftest import RefusedStart
from tests.support.in_process import app_client
from tests.support.providers import marker, provider_settings
from tests.support.service import RunningService
from tests.support.upstream_stub import UpstreamStub

FRONTEND = "https://frontend.example"


@pytest.fixture(scope="module")
def app(stub: UpstreamStub) -> Iterator[TestClient]:
    with app_client(provider_settings("openai", stub)) as client:
        yield client


@pytest.fixture(scope="module")
def cors_app() -> Iterator[TestClient]:
    settings = {
        "QA_CORS_ORIGINS": f"{FRONTEND}, http://localhost:5173",
        "QA_PROVIDER": "demo",
        # A quick demo answer: its headers are what counts here.
        "QA_DEMO_CHUNK_DELAY_MS": "0",
        "QA_DEMO_PAUSE_SECONDS": "0",
    }
    with app_client(settings) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html"),
        ("/qa-client.js", "text/javascript"),
        ("/static/app.js", "text/javascript"),
        ("/static/thread.js", "text/javascript"),
        ("/static/markdown.js", "text/javascript"),
        ("/static/vendor/markdown-it.min.js", "text/javascript"),
        ("/static/style.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
        ("/favicon.ico", "image/svg+xml"),
        ("/docs", "text/html"),
        ("/static/docs.js", "text/javascript"),
        ("/docs/assets/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/assets/swagger-ui.css", "text/css"),
    ],
)
def test_page_and_assets_are_served_with_strict_headers(
    app: TestClient, path: str, content_type: str
) -> None:
    response = app.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_page_has_no_inline_script_or_style(app: TestClient) -> None:
    html = app.get("/").text
    assert "<script>" not in html
    assert 'type="module" src="/static/app.js"' in html
    assert "style=" not in html
    assert "<style" not in html


def test_the_stream_is_sent_no_cache_and_nosniff(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    with httpx.stream(
        "GET", f"{openai_service.url}/ai_write", params={"query": marker()}
    ) as response:
        response.read()
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_no_cors_headers_unless_origins_are_configured(app: TestClient) -> None:
    response = app.get("/healthz", headers={"Origin": FRONTEND})
    assert "access-control-allow-origin" not in response.headers


def test_an_allowed_origin_may_preflight_and_stream(cors_app: TestClient) -> None:
    preflight = cors_app.options(
        "/ai_write",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, cache-control",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == FRONTEND
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in preflight.headers

    response = cors_app.post("/ai_write", json={"query": "tides"}, headers={"Origin": FRONTEND})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["access-control-allow-origin"] == FRONTEND
    exposed = response.headers["access-control-expose-headers"].lower().split(",")
    assert {"x-request-id", "retry-after", "x-ratelimit-remaining-requests", "x-qa-cache"} <= {
        name.strip() for name in exposed
    }


def test_other_origins_are_not_allowed(cors_app: TestClient) -> None:
    evil = "https://evil.example"
    preflight = cors_app.options(
        "/ai_write",
        headers={"Origin": evil, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    response = cors_app.get("/readyz", headers={"Origin": evil})
    assert "access-control-allow-origin" not in response.headers


def test_refusals_carry_cors_headers_so_frontends_can_read_them(cors_app: TestClient) -> None:
    response = cors_app.get("/ai_write", headers={"Origin": FRONTEND})
    assert response.status_code == 422
    assert response.headers["access-control-allow-origin"] == FRONTEND


def test_wildcard_with_credentials_stops_start_up(
    refused_start: RefusedStart, tmp_path: Path
) -> None:
    line = refused_start({"QA_CORS_ORIGINS": "*", "QA_CORS_ALLOW_CREDENTIALS": "true"}, tmp_path)
    assert "QA_CORS_ORIGINS" in line
    assert "QA_CORS_ALLOW_CREDENTIALS" in line


def test_api_docs_are_served_by_the_service_and_redoc_leads_there(app: TestClient) -> None:
    html = app.get("/docs").text
    # Every script and stylesheet from the service itself: no CDN.
    assert "http" not in html.replace('href="/openapi.json"', "")
    assert '<script src="/docs/assets/swagger-ui-bundle.js"' in html
    assert "<script>" not in html
    redoc = app.get("/redoc", follow_redirects=False)
    assert redoc.status_code == 308
    assert redoc.headers["location"] == "/docs"
