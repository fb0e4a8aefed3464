"""At every log level, no line holds the question, the answer, a key or a part of one."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import wait_until
from tests.support.nginx import run_nginx
from tests.support.providers import (
    CANCEL_ON_HANGUP,
    GROQ_KEY,
    OPENAI_KEY,
    marker,
    provider_settings,
)
from tests.support.resume import read
from tests.support.service import RunningService, SharedServices
from tests.support.sse import hang_up_after, read_stream
from tests.support.upstream_stub import Reply, UpstreamStub


@pytest.fixture(params=["openai", "groq"])
def debug_service(
    request: pytest.FixtureRequest, stub: UpstreamStub, shared_services: SharedServices
) -> RunningService:
    settings = {
        **provider_settings(request.param, stub),
        **CANCEL_ON_HANGUP,
        "QA_LOG_LEVEL": "debug",
    }
    return shared_services.one(settings)


def test_a_debug_run_logs_no_question_answer_or_key(
    debug_service: RunningService, stub: UpstreamStub
) -> None:
    question = f"why is the sky {marker()}"
    pieces = [f"answer-{marker()} " for _ in range(5)]
    stub.reply(question, Reply(pieces=pieces))
    refused = f"refused {marker()}"
    stub.reply(
        refused,
        Reply(
            status=401,
            headers={"x-rejected-key": "{api_key_masked}"},
            error_body={"error": {"message": "Incorrect API key provided: {api_key_masked}"}},
        ),
    )
    left = f"left {marker()}"
    stub.reply(left, Reply(pieces=pieces * 40, piece_delay=0.01))

    assert read_stream(debug_service.url, params={"query": question}).text == "".join(pieces)
    assert read_stream(debug_service.url, params={"query": refused}).kinds == ["meta", "error"]
    hang_up_after(debug_service.url, left, "text")
    stub.wait_closed(left)

    records = debug_service.log_records()
    # The run really was at DEBUG, so a quiet log proves nothing by accident.
    assert any(r["level"] == "DEBUG" and r["name"].startswith("qa_service") for r in records)
    logs = debug_service.logs()
    forbidden = [question, refused, left, *pieces, "Incorrect API key"]
    for key in (OPENAI_KEY, GROQ_KEY):
        forbidden += [key, key[:8], key[-8:]]
    assert [word for word in forbidden if word in logs] == []


# Anything shaped like an answer id (answers/model.py ANSWER_ID), standing alone.
_ID_SHAPED = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])")


def test_no_log_line_holds_an_answer_id_that_reads_the_answer_without_a_key(
    stub: UpstreamStub, shared_services: SharedServices
) -> None:
    """An answer id reads and cancels its answer with no key (docs/PROTOCOL.md): one
    in a log line hands a key holder's answer to whoever reads the log. So the
    log is searched for anything id-shaped, and each is tried, keyless."""
    key = f"log-privacy-{marker()}-key"
    service = shared_services.one(
        {**provider_settings("openai", stub), "QA_API_KEYS": key, "QA_LOG_LEVEL": "debug"}
    )
    question = f"paid {marker()}"
    pieces = [f"paid-{marker()} " for _ in range(8)]
    stub.reply(question, Reply(pieces=pieces))
    paid = read(service.url, params={"query": question}, headers={"Authorization": f"Bearer {key}"})
    assert paid.text == "".join(pieces)
    # Every way an id is sent to the service: a resume by path, by Last-Event-ID, a cancel.
    assert read(service.url, f"/answers/{paid.answer_id}/events").text == paid.text
    read(service.url, params={"query": question}, last_event_id=paid.ids[2])
    httpx.post(f"{service.url}/answers/{paid.answer_id}/cancel", timeout=10)
    record = service.answer_record(paid.headers["x-request-id"])

    candidates = set(_ID_SHAPED.findall(service.logs()))
    readable = [
        token
        for token in candidates
        if httpx.get(f"{service.url}/answers/{token}/events", timeout=10).status_code == 200
    ]
    assert readable == []
    # The answer line names it by a reference an operator can compute from the id.
    assert record["answer_ref"] == hashlib.sha256(paid.answer_id.encode()).hexdigest()[:12]
    assert "answer_id" not in record


def test_the_shipped_nginx_logs_answer_paths_without_their_id(
    openai_service: RunningService, stub: UpstreamStub, tmp_path: Path
) -> None:
    question = f"through nginx {marker()}"
    stub.reply(question, Reply(pieces=["Logged ", "without ", "ids."]))
    with run_nginx([openai_service.url.removeprefix("http://")], tmp_path) as nginx:
        answer = read(nginx.url, params={"query": question})
        answer_id = answer.answer_id
        requests = [
            httpx.get(f"{nginx.url}/answers/{answer_id}/events", timeout=10),
            httpx.head(f"{nginx.url}/answers/{answer_id}/events", timeout=10),
            httpx.post(f"{nginx.url}/answers/{answer_id}/cancel", timeout=10),
            httpx.get(f"{nginx.url}/answers/{answer_id}", timeout=10),  # no such route: 404
        ]
        assert [r.status_code for r in requests] == [200, 200, 200, 404]

        # nginx writes a line after its response has gone out.
        def every_line() -> str | None:
            log = nginx.access_log()
            return log if log.count("\n") >= 1 + len(requests) else None

        access_log = wait_until(every_line, 10, "5 access-log lines", describe=nginx.access_log)

    assert answer_id not in access_log
    assert "GET /ai_write HTTP/1.1" in access_log
    assert access_log.count("GET /answers/[id]/events HTTP/1.1") == 1
    assert access_log.count("HEAD /answers/[id]/events HTTP/1.1") == 1
    assert access_log.count("POST /answers/[id]/cancel HTTP/1.1") == 1
    assert access_log.count("GET /answers/[id] HTTP/1.1") == 1
