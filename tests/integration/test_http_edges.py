"""HTTP at its edges: HEAD wherever GET works, `Allow` on every 405, URLs too long to parse."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.support.providers import marker
from tests.support.service import RunningService
from tests.support.upstream_stub import UpstreamStub


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/readyz",
        "/prompts",
        "/metrics",
        "/",
        "/qa-client.js",
        "/favicon.ico",
        "/static/style.css",
        "/openapi.json",
        "/docs",
    ],
)
def test_head_works_wherever_get_does(openai_service: RunningService, path: str) -> None:
    got = httpx.get(f"{openai_service.url}{path}")
    head = httpx.head(f"{openai_service.url}{path}")

    assert got.status_code == 200
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


def test_head_on_ai_write_checks_the_query_but_asks_no_model(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    head = httpx.head(f"{openai_service.url}/ai_write", params={"query": key})

    assert head.status_code == 200
    assert head.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert head.headers["cache-control"] == "no-cache"
    assert "content-length" not in head.headers
    assert head.content == b""
    # Had an answer started, its upstream request and its log line would follow.
    time.sleep(1.0)
    assert stub.exchanges_for(key) == []
    request_id = head.headers["x-request-id"]
    answers = [
        r
        for r in openai_service.log_records()
        if r.get("message") == "answer" and r.get("request_id") == request_id
    ]
    assert answers == []
    refused = httpx.head(f"{openai_service.url}/ai_write")
    assert refused.status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/ai_write", "GET, HEAD, POST"),
        ("PUT", "/ai_write", "GET, HEAD, POST"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
        ("POST", "/static/style.css", "GET, HEAD"),
        ("POST", "/openapi.json", "GET, HEAD"),
    ],
)
def test_every_405_says_which_methods_are_allowed(
    openai_service: RunningService, method: str, path: str, allow: str
) -> None:
    response = httpx.request(method, f"{openai_service.url}{path}")

    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["error"]["code"] == "method_not_allowed"


def _raw_request(service: RunningService, request: bytes) -> tuple[str, bytes]:
    """Send bytes as they are (no client would send a bad request line); status line and body."""
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head
    return head.split(b"\r\n")[0].decode(), body


def test_a_url_too_long_to_parse_gets_a_json_414_pointing_to_post(
    openai_service: RunningService,
) -> None:
    # httptools cannot parse a URL over 65,535 bytes, so the app never sees it.
    # (httpx refuses to send one; a browser's EventSource does.)
    query = b"x" * 100_000
    request = b"GET /ai_write?query=" + query + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    status, body = _raw_request(openai_service, request)

    assert status == "HTTP/1.1 414 Request-URI Too Long"
    error = json.loads(body)["error"]
    assert error["code"] == "url_too_long"
    assert "POST /ai_write" in error["message"]
    assert error["retryable"] is False


def test_a_long_url_the_parser_can_read_reaches_the_app(openai_service: RunningService) -> None:
    response = httpx.get(f"{openai_service.url}/ai_write", params={"query": "x" * 60_000})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "query_too_long"


def test_a_request_that_is_not_http_gets_a_json_400(openai_service: RunningService) -> None:
    status, body = _raw_request(openai_service, b"GET /healthz HTTP/1.1\r\nbad header\r\n\r\n")

    assert status == "HTTP/1.1 400 Bad Request"
    assert b"Invalid HTTP request" not in body
    assert b'"code": "bad_http_request"' in body
