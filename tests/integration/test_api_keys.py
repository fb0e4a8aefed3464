"""API keys and stream tickets, against the real service: who may start an answer,
what stays open, tickets that work once, and that no key or ticket is ever logged."""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import RefusedStart
from tests.support.metrics import delta, read_metrics
from tests.support.providers import marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.resume import read
from tests.support.service import RunningService, run_service, run_services
from tests.support.sse import read_stream
from tests.support.upstream_stub import Reply, UpstreamStub

# Fake keys, made per run. VARIABLE_KEY comes from QA_API_KEYS; FILE_KEY is
# admitted by a hash in QA_API_KEYS_FILE only.
VARIABLE_KEY = f"qa-var-{secrets.token_urlsafe(24)}"
FILE_KEY = f"qa-file-{secrets.token_urlsafe(24)}"
WRONG_KEY = f"qa-wrong-{secrets.token_urlsafe(24)}"
PIECES = ["Keys ", "and ", "tickets."]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_file(directory: Path) -> Path:
    # Hashed here with hashlib, not with the service's own helper.
    path = directory / "api-keys.txt"
    digest = hashlib.sha256(FILE_KEY.encode()).hexdigest()
    path.write_text(f"# team A's key\n\nsha256:{digest} team-a  # since 2026-11\n")
    return path


def keyed_settings(stub: UpstreamStub, directory: Path, **extra: str) -> dict[str, str]:
    return {
        **provider_settings("openai", stub),
        "QA_API_KEYS": f"{VARIABLE_KEY}, ",
        "QA_API_KEYS_FILE": str(keys_file(directory)),
        "QA_LOG_LEVEL": "debug",
        "QA_RESUME_GRACE_SECONDS": "3",
        **extra,
    }


@pytest.fixture(scope="module")
def keyed(stub: UpstreamStub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    directory = tmp_path_factory.mktemp("keyed")
    with run_service(keyed_settings(stub, directory), directory) as service:
        yield service


def scripted(stub: UpstreamStub, pieces: list[str] = PIECES, delay: float = 0.0) -> str:
    question = f"keys {marker()}"
    stub.reply(question, Reply(pieces=pieces, piece_delay=delay))
    return question


def issue_ticket(service: RunningService, body: dict[str, str], key: str | None) -> str:
    response = httpx.post(
        f"{service.url}/stream-tickets", json=body, headers=bearer(key) if key else {}
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    grant = response.json()
    assert grant["expires_in"] == 60 or grant["expires_in"] > 0
    return str(grant["ticket"])


def start(service: RunningService, how: str, query: str, headers: dict[str, str]) -> httpx.Response:
    """A request that would start a new answer; only the status and headers are read."""
    url = f"{service.url}/ai_write"
    if how == "GET":
        return httpx.get(url, params={"query": query}, headers=headers, timeout=10)
    if how == "HEAD":
        return httpx.head(url, params={"query": query}, headers=headers, timeout=10)
    if how == "POST":
        return httpx.post(url, json={"query": query}, headers=headers, timeout=10)
    return httpx.post(
        f"{service.url}/stream-tickets", json={"query": query}, headers=headers, timeout=10
    )


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    if response.request.method != "HEAD":
        assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("how", ["GET", "HEAD", "POST", "tickets"])
@pytest.mark.parametrize(
    "headers",
    [{}, bearer(WRONG_KEY), {"Authorization": f"Basic {VARIABLE_KEY}"}, bearer(VARIABLE_KEY[:-1])],
    ids=["no-key", "wrong-key", "other-scheme", "truncated-key"],
)
def test_a_new_answer_without_a_valid_key_is_refused_401_before_any_upstream_call(
    keyed: RunningService, stub: UpstreamStub, how: str, headers: dict[str, str]
) -> None:
    question = scripted(stub)
    assert_unauthorized(start(keyed, how, question, headers))
    assert stub.exchanges_for(question) == []


@pytest.mark.parametrize("key", [VARIABLE_KEY, FILE_KEY], ids=["QA_API_KEYS", "QA_API_KEYS_FILE"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_right_key_streams_the_answer(
    keyed: RunningService, stub: UpstreamStub, key: str, method: str
) -> None:
    question = scripted(stub)
    stream = read_stream(
        keyed.url,
        method=method,
        params={"query": question} if method == "GET" else None,
        json_body={"query": question} if method == "POST" else None,
        headers={"authorization": f"bearer {key}"},  # the scheme is case-insensitive
    )
    assert stream.status == 200
    assert stream.text == "".join(PIECES)
    assert "done" in stream.last


def test_head_with_a_right_key_answers_with_the_streams_headers(keyed: RunningService) -> None:
    response = start(keyed, "HEAD", "a question", bearer(VARIABLE_KEY))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")


def test_a_ticket_starts_one_answer_then_is_spent(
    keyed: RunningService, stub: UpstreamStub
) -> None:
    question = scripted(stub)
    ticket = issue_ticket(keyed, {"query": question, "prompt": "eli5"}, VARIABLE_KEY)
    params = {"query": question, "prompt": "eli5", "ticket": ticket}

    first = read_stream(keyed.url, params=params)
    assert first.status == 200
    assert first.text == "".join(PIECES)
    assert_unauthorized(httpx.get(f"{keyed.url}/ai_write", params=params))
    assert len(stub.exchanges_for(question)) == 1


@pytest.mark.parametrize(
    "used_with",
    [{"query": "another question"}, {"prompt": "outline"}, {"prompt": None}],
    ids=["other-query", "other-prompt", "default-prompt"],
)
def test_a_ticket_for_another_request_is_refused_and_spent(
    keyed: RunningService, stub: UpstreamStub, used_with: dict[str, str | None]
) -> None:
    question = scripted(stub)
    issued_for = {"query": question, "prompt": "eli5"}
    ticket = issue_ticket(keyed, issued_for, VARIABLE_KEY)
    other = {k: v for k, v in {**issued_for, **used_with}.items() if v is not None}

    assert_unauthorized(httpx.get(f"{keyed.url}/ai_write", params={**other, "ticket": ticket}))
    # The refused attempt spent it: the right request cannot use it either.
    right = {**issued_for, "ticket": ticket}
    assert_unauthorized(httpx.get(f"{keyed.url}/ai_write", params=right))
    assert stub.exchanges_for(question) == []


@pytest.mark.parametrize(
    "ticket",
    [secrets.token_urlsafe(32), "short", "", "x" * 200],
    ids=["never-issued", "short", "empty", "long"],
)
def test_an_unknown_ticket_is_refused(keyed: RunningService, ticket: str) -> None:
    response = httpx.get(f"{keyed.url}/ai_write", params={"query": "q", "ticket": ticket})
    assert_unauthorized(response)


def test_an_expired_ticket_is_refused(stub: UpstreamStub, tmp_path: Path) -> None:
    settings = keyed_settings(stub, tmp_path, QA_TICKET_TTL_SECONDS="1")
    with run_service(settings, tmp_path) as service:
        question = scripted(stub)
        fresh = issue_ticket(service, {"query": question}, VARIABLE_KEY)
        stale = issue_ticket(service, {"query": question}, VARIABLE_KEY)
        # The same service takes a ticket used at once ...
        assert read_stream(service.url, params={"query": question, "ticket": fresh}).status == 200
        # ... and refuses one used after its second has passed.
        time.sleep(1.5)
        response = httpx.get(f"{service.url}/ai_write", params={"query": question, "ticket": stale})
        assert_unauthorized(response)
        assert len(stub.exchanges_for(question)) == 1


def test_stream_tickets_checks_the_body_as_ai_write_does(keyed: RunningService) -> None:
    url = f"{keyed.url}/stream-tickets"
    key = bearer(VARIABLE_KEY)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {"query": " "}}, 422, "query_required"),
        ({"json": {"query": "q", "prompt": "nope"}}, 422, "unknown_prompt"),
        ({"json": {"query": "q", "extra": 1}}, 422, "invalid_request"),
        ({"json": {"query": "q", "prompt": 7}}, 422, "invalid_request"),
        ({"json": {"query": "x" * 4001}}, 422, "query_too_long"),
        ({"data": {"query": "q"}}, 415, "unsupported_media_type"),
    ]
    for request, status, code in cases:
        response = httpx.post(url, headers=key, **request)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    # Without a key, the key is what is refused, whatever the body.
    assert_unauthorized(httpx.post(url, json={"query": " "}))


def test_a_resume_needs_no_key_and_an_eventsource_reconnect_with_its_spent_ticket_works(
    keyed: RunningService, stub: UpstreamStub
) -> None:
    pieces = [f"p{n} " for n in range(30)]
    question = scripted(stub, pieces, delay=0.02)
    ticket = issue_ticket(keyed, {"query": question}, FILE_KEY)
    params = {"query": question, "ticket": ticket}
    first = read(keyed.url, params=params, texts=2)
    assert first.status == 200
    # As an EventSource reconnects: the same URL, its ticket spent, and Last-Event-ID.
    rest = read(keyed.url, params=params, last_event_id=first.last_id)
    assert rest.status == 200
    assert first.text + rest.text == "".join(pieces)
    assert len(stub.exchanges_for(question)) == 1


def test_reading_and_cancelling_by_answer_id_need_no_key(
    keyed: RunningService, stub: UpstreamStub
) -> None:
    question = scripted(stub, [f"c{n} " for n in range(400)], delay=0.02)
    first = read(keyed.url, params={"query": question}, headers=bearer(VARIABLE_KEY), texts=1)
    answer_id = first.answer_id

    replay = read(keyed.url, f"/answers/{answer_id}/events", texts=1)
    assert replay.status == 200
    assert replay.answer_id == answer_id
    cancelled = httpx.post(f"{keyed.url}/answers/{answer_id}/cancel")
    assert cancelled.json() == {"answer_id": answer_id, "status": "cancelled"}
    stub.wait_closed(question)


def test_a_resume_of_an_unknown_answer_without_a_key_starts_nothing(
    keyed: RunningService, stub: UpstreamStub
) -> None:
    question = scripted(stub)
    response = httpx.get(
        f"{keyed.url}/ai_write",
        params={"query": question},
        headers={"Last-Event-ID": f"{'A' * 22}:0"},
    )
    assert response.status_code == 404
    assert stub.exchanges_for(question) == []


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/metrics", "/prompts", "/", "/qa-client.js", "/openapi.json"]
)
def test_operations_the_page_and_the_schema_need_no_key(keyed: RunningService, path: str) -> None:
    assert httpx.get(f"{keyed.url}{path}").status_code == 200


def test_the_schema_says_which_operations_take_a_bearer_key(keyed: RunningService) -> None:
    schema = httpx.get(f"{keyed.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    keyed_operations = {
        (path, method)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "security" in operation
    }
    assert keyed_operations == {
        ("/ai_write", "get"),
        ("/ai_write", "head"),
        ("/ai_write", "post"),
        ("/stream-tickets", "post"),
        ("/v1/chat/completions", "post"),
        ("/v1/models", "get"),
        ("/v1/models/{model}", "get"),
        ("/v1/responses", "post"),
        ("/v1/responses/{response_id}", "get"),
        ("/v1/responses/{response_id}/cancel", "post"),
        ("/api/chat", "post"),
        ("/api/chat/{chat_id}/stream", "get"),
    }
    # Only GET and HEAD /ai_write may go without the key (a ticket instead).
    optional = {
        (path, method)
        for path, method in keyed_operations
        if {} in schema["paths"][path][method]["security"]
    }
    assert optional == {("/ai_write", "get"), ("/ai_write", "head")}
    ticket = [p for p in schema["paths"]["/ai_write"]["get"]["parameters"] if p["name"] == "ticket"]
    assert ticket[0]["in"] == "query"


def test_auth_refusals_are_counted_by_reason(keyed: RunningService, stub: UpstreamStub) -> None:
    question = scripted(stub)
    before = read_metrics(keyed.url)
    start(keyed, "GET", question, {})
    start(keyed, "POST", question, bearer(WRONG_KEY))
    start(keyed, "tickets", question, bearer(WRONG_KEY))
    httpx.get(f"{keyed.url}/ai_write", params={"query": question, "ticket": "t" * 43})
    ticket = issue_ticket(keyed, {"query": question}, VARIABLE_KEY)
    httpx.get(f"{keyed.url}/ai_write", params={"query": "other", "ticket": ticket})
    after = read_metrics(keyed.url)

    counted = {
        reason: delta(before, after, "qa_auth_refusals_total", reason=reason)
        for reason in ("no_credentials", "wrong_key", "bad_ticket", "ticket_mismatch")
    }
    assert counted == {"no_credentials": 1, "wrong_key": 2, "bad_ticket": 1, "ticket_mismatch": 1}
    # The four on /ai_write (not the one on /stream-tickets) count as refused requests.
    assert delta(before, after, "qa_requests_total", outcome="refused", code="unauthorized") == 4


def test_without_keys_tickets_work_and_a_bad_one_is_still_refused(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    question = scripted(stub)
    ticket = issue_ticket(openai_service, {"query": question}, None)
    stream = read_stream(openai_service.url, params={"query": question, "ticket": ticket})
    assert stream.text == "".join(PIECES)
    again = httpx.get(
        f"{openai_service.url}/ai_write", params={"query": question, "ticket": ticket}
    )
    assert_unauthorized(again)


def test_no_key_or_ticket_reaches_the_log(keyed: RunningService, stub: UpstreamStub) -> None:
    """Every way a key or ticket can be sent, right and wrong, at DEBUG; then grep."""
    question = scripted(stub)
    used = issue_ticket(keyed, {"query": question}, VARIABLE_KEY)
    mismatched = issue_ticket(keyed, {"query": question}, FILE_KEY)
    unknown = secrets.token_urlsafe(32)
    url = f"{keyed.url}/ai_write"
    read_stream(keyed.url, params={"query": question, "ticket": used})
    httpx.get(url, params={"query": question, "ticket": used})  # spent
    httpx.get(url, params={"query": "other", "ticket": mismatched})
    httpx.get(url, params={"query": question, "ticket": unknown})
    httpx.get(f"{url}?query=q&ticket={unknown}&ticket={unknown}")  # repeated
    httpx.get(f"{url}?query=q&ticket={unknown}&{unknown}=1")  # an unknown parameter
    long_url = f"/ai_write?ticket={unknown}&query=" + "q" * 70_000  # 414, by the server
    _send_raw(keyed, f"GET {long_url} HTTP/1.1\r\nHost: t\r\n\r\n")
    httpx.post(url, json={"query": question, "ticket": unknown}, headers=bearer(WRONG_KEY))
    httpx.post(url, json={"query": question}, headers={"Authorization": f"Bearer {WRONG_KEY} x"})
    httpx.post(f"{keyed.url}/stream-tickets", content=b"{", headers=bearer(FILE_KEY))
    read_stream(keyed.url, params={"query": question}, headers=bearer(FILE_KEY))
    _send_raw(keyed, f"GET /ai_write?ticket={unknown} HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    _send_raw(keyed, f"GET /ai_write?q={unknown}\x00 HTTP/1.1\r\n\r\n")

    logs = keyed.logs()
    assert '"level": "DEBUG"' in logs  # a quiet log would prove nothing
    secrets_sent = [VARIABLE_KEY, FILE_KEY, WRONG_KEY, used, mismatched, unknown]
    leaked = [
        part for value in secrets_sent for part in (value, value[:12], value[-12:]) if part in logs
    ]
    assert leaked == []


def _send_raw(service: RunningService, request: str) -> None:
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(request.encode("latin-1"))
        connection.recv(4096)


def test_a_raw_key_pasted_into_the_keys_file_stops_start_up_without_being_printed(
    refused_start: RefusedStart, tmp_path: Path
) -> None:
    path = tmp_path / "api-keys.txt"
    path.write_text(f"# oops\n{VARIABLE_KEY}\n")
    line = refused_start({"QA_PROVIDER": "demo", "QA_API_KEYS_FILE": str(path)}, tmp_path)
    assert line.startswith("qa-service: configuration error: QA_API_KEYS_FILE: ")
    assert "line 2" in line
    assert VARIABLE_KEY[:12] not in line


@pytest.mark.replicas
def test_a_ticket_from_one_replica_is_redeemed_on_another_and_only_once(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    with run_redis(tmp_path) as redis_server:
        settings = keyed_settings(stub, tmp_path, QA_REDIS_URL=redis_server.url)
        with run_services([settings, settings], tmp_path) as (a, b):
            question = scripted(stub)
            ticket = issue_ticket(a, {"query": question}, VARIABLE_KEY)
            with redis_server.client() as client:
                stored = [k.decode() for k in client.keys("qa:ticket:*")]
                values = [client.get(k) for k in stored]
            # Only the digest is stored, and the value names no ticket.
            assert stored == [f"qa:ticket:{hashlib.sha256(ticket.encode()).hexdigest()}"]
            assert ticket not in json.dumps([v.decode() for v in values if v])

            stream = read_stream(b.url, params={"query": question, "ticket": ticket})
            assert stream.text == "".join(PIECES)
            for replica in (a, b):
                response = httpx.get(
                    f"{replica.url}/ai_write", params={"query": question, "ticket": ticket}
                )
                assert_unauthorized(response)

            # Two replicas redeeming one ticket at the same moment: one answer.
            question = scripted(stub)
            ticket = issue_ticket(b, {"query": question}, FILE_KEY)
            with ThreadPoolExecutor(2) as pool:
                statuses = sorted(
                    pool.map(
                        lambda replica: (
                            read_stream(
                                replica.url, params={"query": question, "ticket": ticket}
                            ).status
                        ),
                        (a, b),
                    )
                )
            assert statuses == [200, 401]
            assert len(stub.exchanges_for(question)) == 1


@pytest.mark.replicas
def test_a_ticket_is_refused_where_the_key_that_bought_it_is_no_longer_listed(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    """A rolling update that removes a key: the replica started from the new keys
    file refuses the tickets the old one sold for that key, with the one 401."""
    with run_redis(tmp_path) as redis_server:
        old = keyed_settings(stub, tmp_path, QA_REDIS_URL=redis_server.url)
        removed = tmp_path / "api-keys-after.txt"
        removed.write_text(f"sha256:{hashlib.sha256(WRONG_KEY.encode()).hexdigest()} team-b\n")
        new = {**old, "QA_API_KEYS_FILE": str(removed)}
        with run_services([old, new], tmp_path) as (before_removal, after_removal):
            questions = [scripted(stub) for _ in range(5)]
            tickets = [issue_ticket(before_removal, {"query": q}, FILE_KEY) for q in questions]
            metrics_before = read_metrics(after_removal.url)
            refusals = [
                httpx.get(
                    f"{after_removal.url}/ai_write",
                    params={"query": question, "ticket": ticket},
                    timeout=10,
                )
                for question, ticket in zip(questions, tickets, strict=True)
            ]
            assert [r.status_code for r in refusals] == [401] * 5
            for response in refusals:
                assert_unauthorized(response)
            assert all(stub.exchanges_for(question) == [] for question in questions)
            metrics_after = read_metrics(after_removal.url)
            assert (
                delta(
                    metrics_before,
                    metrics_after,
                    "qa_auth_refusals_total",
                    reason="ticket_key_removed",
                )
                == 5
            )

            # A key both replicas list keeps its tickets.
            question = scripted(stub)
            ticket = issue_ticket(before_removal, {"query": question}, VARIABLE_KEY)
            stream = read_stream(after_removal.url, params={"query": question, "ticket": ticket})
            assert stream.text == "".join(PIECES)
