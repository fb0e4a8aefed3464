"""Bad input is refused with a JSON 4xx before any upstream call, never truncated.

The refusals that a real server adds nothing to are checked on the app in this
process (`app`); a body that is never sent or arrives in chunks, and the
requests that are answered, go to the real service.
"""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from tests.support.in_process import app_client
from tests.support.providers import CANCEL_ON_HANGUP, marker, provider_settings
from tests.support.service import RunningService
from tests.support.sse import read_stream
from tests.support.upstream_stub import OPENAI_PATH, UpstreamStub

LIMIT = 4000  # QA_MAX_QUERY_CHARS default
# The POST body cap for the defaults (PROTOCOL.md, body_too_large): a query and
# a history (QA_MAX_HISTORY_CHARS 32000, QA_MAX_HISTORY_MESSAGES 50) of escaped emoji.
BODY_CAP = 12 * (LIMIT + 32_000) + 64 * 50 + 4096


def _refusal(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["retryable"] is False
    assert body["error"]["message"]


# The in-process app's own provider key: the stub's requests from it, and from
# no other service of the session, are the ones these tests count.
APP_KEY = "sk-test-in-process-bad-input"


@pytest.fixture(scope="module")
def app(stub: UpstreamStub) -> Iterator[TestClient]:
    settings = {**provider_settings("openai", stub), **CANCEL_ON_HANGUP, "OPENAI_API_KEY": APP_KEY}
    with app_client(settings) as client:
        yield client


def _upstream_calls(stub: UpstreamStub) -> int:
    """The provider requests the stub has had from the in-process app.

    A blank query cannot carry a marker, so these tests count requests, by the key.
    """
    return len(stub.exchanges_with_key(APP_KEY, OPENAI_PATH))


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "query_required"),
        ({"query": ""}, "query_required"),
        ({"query": "   \t\n "}, "query_required"),
        # Whitespace to Python or to JavaScript, as the OpenAPI pattern says.
        ({"query": "\x1c\x85\u3000\ufeff"}, "query_required"),
        ({"query": "x" * (LIMIT + 1)}, "query_too_long"),
        ({"query": "ok", "prompt": "no-such-prompt"}, "unknown_prompt"),
        ({"query": "ok", "prompt": "../etc/passwd"}, "unknown_prompt"),
        ({"query": "ok", "scenario": "slow_first_token"}, "unknown_scenario"),
    ],
)
def test_bad_get_is_refused_before_any_upstream_call(
    app: TestClient, stub: UpstreamStub, params: dict[str, str], code: str
) -> None:
    before = _upstream_calls(stub)

    response = app.get("/ai_write", params=params)

    _refusal(response, 422, code)
    assert _upstream_calls(stub) == before


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "query_required"),
        ({"query": None}, "query_required"),
        ({"query": " "}, "query_required"),
        ({"query": "é" * (LIMIT + 1)}, "query_too_long"),
        ({"query": 42}, "invalid_request"),
        ({"query": "ok", "unexpected": 1}, "invalid_request"),
        ({"query": "ok", "prompt": "nope"}, "unknown_prompt"),
    ],
)
def test_bad_post_is_refused_before_any_upstream_call(
    app: TestClient, stub: UpstreamStub, body: dict[str, object], code: str
) -> None:
    before = _upstream_calls(stub)

    response = app.post("/ai_write", json=body)

    _refusal(response, 422, code)
    assert _upstream_calls(stub) == before


def test_malformed_json_is_refused(app: TestClient) -> None:
    response = app.post(
        "/ai_write", content=b'{"query": ', headers={"content-type": "application/json"}
    )
    _refusal(response, 422, "invalid_request")


def test_a_body_declared_over_the_cap_is_refused_before_any_of_it_is_sent(
    openai_service: RunningService,
) -> None:
    """The Content-Length alone decides: a service that read the body would wait for ever."""
    port = int(openai_service.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(
            b"POST /ai_write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {BODY_CAP + 1}\r\n\r\n".encode()
        )
        response = http.client.HTTPResponse(client)
        response.begin()  # the socket's timeout bounds the wait
        body = json.loads(response.read())

    assert response.status == 413
    assert body["error"]["code"] == "body_too_large"


def test_query_at_the_limit_is_answered_whole(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    query = key + "界" * (LIMIT - len(key))

    response = httpx.post(f"{openai_service.url}/ai_write", json={"query": query})

    assert response.status_code == 200
    sent = stub.exchanges_for(key)[0].body["messages"][-1]["content"]
    assert sent.endswith(query)


def test_unknown_routes_and_methods_get_json_errors(app: TestClient) -> None:
    _refusal(app.get("/nope"), 404, "not_found")
    _refusal(app.delete("/ai_write"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("content", "content_type", "detail"),
    [
        # A form's content type is refused with 415 first (see below).
        (b"query=tides", "application/json", "body: send JSON, not a form"),
        (b'{"query": ', "application/json", "body: not valid JSON"),
        (b"", "application/json", "body: empty"),
        (b'["tides"]', "application/json", "body: must be a JSON object"),
        (b'{"query": 42}', "application/json", "query: must be a string"),
        (b'{"query": "ok", "prompt": ["eli5"]}', "application/json", "prompt: must be a string"),
        (b'{"query": "ok", "colour": "SECRET"}', "application/json", "colour: unknown field"),
        (b'{"query": "ok", "<b>SECRET": 1}', "application/json", "a field: unknown field"),
    ],
)
def test_invalid_post_names_the_field_and_the_problem_not_the_value(
    app: TestClient, content: bytes, content_type: str, detail: str
) -> None:
    response = app.post("/ai_write", content=content, headers={"content-type": content_type})

    _refusal(response, 422, "invalid_request")
    message = response.json()["error"]["message"]
    assert detail in message
    assert "SECRET" not in message
    assert "tides" not in message


@pytest.mark.parametrize(
    ("query_string", "detail"),
    [
        ("query=ok&promt=eli5", "promt: unknown parameter"),
        ("query=ok&%3Cscript%3E=1", "a parameter: unknown parameter"),
        ("query=one&query=two", "query: given more than once"),
    ],
)
def test_invalid_get_names_the_parameter_and_the_problem(
    app: TestClient, stub: UpstreamStub, query_string: str, detail: str
) -> None:
    before = _upstream_calls(stub)

    response = app.get(f"/ai_write?{query_string}")

    _refusal(response, 422, "invalid_request")
    assert detail in response.json()["error"]["message"]
    assert _upstream_calls(stub) == before


def test_an_unknown_prompt_is_named_only_when_it_is_a_name(app: TestClient) -> None:
    named = app.get("/ai_write", params={"query": "x", "prompt": "nope"})
    odd = app.get("/ai_write", params={"query": "x", "prompt": "../etc"})

    assert "no prompt named 'nope'" in named.json()["error"]["message"]
    message = odd.json()["error"]["message"]
    assert "../etc" not in message
    assert "'?'" not in message
    assert "a-z, 0-9, _ and -" in message
    assert "explain" in message


def test_a_name_or_id_with_a_trailing_newline_is_not_taken_for_one(app: TestClient) -> None:
    """Python's `$` matches before a final newline: every id and name pattern
    matches the whole string instead (fullmatch)."""
    started = app.get("/ai_write", params={"query": "x", "prompt": "explain\n"})
    assert started.status_code == 422
    assert "explain\\n" not in started.json()["error"]["message"]  # not echoed as a name
    answer_id = "A" * 22
    for response in (
        app.get(f"/answers/{answer_id}%0A/events"),
        app.post(f"/answers/{answer_id}%0A/cancel"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "answer_not_found"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",  # what a cross-origin <form enctype="text/plain"> sends, unpreflighted
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
        "application/jsonx",
    ],
)
def test_a_post_that_is_not_json_is_refused_with_415_before_any_upstream_call(
    app: TestClient, stub: UpstreamStub, content_type: str | None
) -> None:
    key = marker()
    headers = {"content-type": content_type} if content_type else {}
    response = app.post("/ai_write", content=f'{{"query": "{key}"}}'.encode(), headers=headers)

    _refusal(response, 415, "unsupported_media_type")
    assert stub.exchanges_for(key) == []


def test_json_with_a_charset_parameter_is_accepted(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    with httpx.stream(
        "POST",
        f"{openai_service.url}/ai_write",
        content=f'{{"query": "{key}"}}'.encode(),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    ) as response:
        assert response.status_code == 200
        response.read()
    assert len(stub.exchanges_for(key)) == 1


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_cap(
    openai_service: RunningService,
) -> None:
    """No Content-Length to go by: the cap holds while the body streams in."""
    port = int(openai_service.url.rsplit(":", 1)[1])
    piece = b"x" * 16_384
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(
            b"POST /ai_write HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        deadline = time.monotonic() + 10
        while not select.select([client], [], [], 0.01)[0]:
            assert time.monotonic() < deadline, "never refused"
            assert sent < 8_000_000, "never refused"
            client.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
        head = client.recv(65536).split(b"\r\n", 1)[0]

    assert head.startswith(b"HTTP/1.1 413")
    # Refused within a few pieces of the cap, not after buffering everything.
    assert sent < BODY_CAP + 20 * len(piece)


def test_a_query_of_escaped_emoji_at_the_limit_is_answered_whole(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    """json.dumps escapes every emoji as 12 bytes: 4,000 of them are 48 kB."""
    key = marker()
    query = key + "\U0001f600" * (LIMIT - len(key))
    body = json.dumps({"query": query}).encode()  # ensure_ascii, as json and requests default
    assert len(body) > LIMIT * 6 + 4096  # what the cap used to allow

    response = httpx.post(
        f"{openai_service.url}/ai_write",
        content=body,
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 200
    assert stub.exchanges_for(key)[0].body["messages"][-1]["content"].endswith(query)


def test_a_query_of_escaped_emoji_one_past_the_limit_is_too_long_not_too_large(
    app: TestClient,
) -> None:
    """Counted in characters, as the limit is documented: the body cap must not refuse it first."""
    body = json.dumps({"query": "\U0001f600" * (LIMIT + 1)}).encode()

    response = app.post("/ai_write", content=body, headers={"content-type": "application/json"})

    _refusal(response, 422, "query_too_long")


@pytest.mark.parametrize("sent", ["a:b:c:d:e", "x" * 65, "short", "spaces are bad"])
def test_a_malformed_request_id_is_replaced_by_one_of_ours(
    openai_service: RunningService, sent: str
) -> None:
    # A log line's request_id stays a plain token (no ':', spaces or controls); length and
    # charset keep odd values out of logs and meta events.
    stream = read_stream(
        openai_service.url, params={"query": marker()}, headers={"x-request-id": sent}
    )

    request_id = stream.headers["x-request-id"]
    assert request_id != sent
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert stream.events[0]["meta"]["request_id"] == request_id
    assert all(event_id.rsplit(":", 1)[0] != request_id for event_id in stream.ids)


def test_a_well_formed_request_id_from_a_proxy_is_kept(openai_service: RunningService) -> None:
    sent = "nginx-0f3c9a5e2b7d4e0f"
    stream = read_stream(
        openai_service.url, params={"query": marker()}, headers={"x-request-id": sent}
    )
    assert stream.headers["x-request-id"] == sent
    assert stream.events[0]["meta"]["request_id"] == sent


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"},
        {"sec-fetch-site": "cross-site", "origin": "https://elsewhere.example"},
        {"sec-fetch-site": "same-site", "origin": "https://sub.elsewhere.example"},
        {"origin": "https://elsewhere.example"},  # a browser without Fetch Metadata
    ],
)
def test_a_page_of_another_site_cannot_start_an_answer(
    app: TestClient, stub: UpstreamStub, headers: dict[str, str]
) -> None:
    key = marker()

    response = app.get("/ai_write", params={"query": key}, headers=headers)

    _refusal(response, 403, "cross_site_refused")
    assert stub.exchanges_for(key) == []


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, an SDK
        {"sec-fetch-site": "same-origin"},  # our own page
        {"sec-fetch-site": "none"},  # the address bar
    ],
)
def test_our_own_page_and_clients_that_are_not_browsers_may(
    openai_service: RunningService, headers: dict[str, str]
) -> None:
    stream = read_stream(openai_service.url, params={"query": marker()}, headers=headers)
    assert stream.status == 200
    assert stream.kinds[-1] == "done"
