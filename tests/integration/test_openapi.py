"""/openapi.json describes every route as it behaves, checked against real responses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.service import RunningService, SharedServices, tool_env

# Schemathesis sends real requests. Its run is bounded by examples per
# operation, not by time: with --max-time, fuzzing repeats until the time is
# spent, and the count would follow the machine's speed. With a fixed seed the
# count is the same on every run, and a failure can be replayed. The issue
# asks for 1,000 generated requests across every route: the run against the
# stub's provider generated 2,249 at 150 examples with the /v1 and /api/chat
# routes (84 s of CI's slowest lane; 1,099 before those routes); 70 send
# 1,839 (about 25 s quiet). A demo
# answer is 100 events, each checked against the schema, so its run, there
# for the scenario field, is smaller.
#
# Sized by tier: the full suite (scripts/test.sh) runs the full size, marked
# `slow`; QA_TESTS_FUZZ=small sends a sixth of the examples (about a third of
# the requests), for a quicker tier that still sends every operation valid and
# invalid requests.
FUZZ = os.environ.get("QA_TESTS_FUZZ", "full")
EXAMPLES = {
    "full": {"openai": 70, "demo": 15},
    "small": {"openai": 25, "demo": 3},
}[FUZZ]
MIN_CASES = {
    "full": {"openai": 1000, "demo": 250},
    # 874 and 700 generated (the coverage phase's cases do not scale with examples).
    "small": {"openai": 600, "demo": 400},
}[FUZZ]
FUZZ_MARKS = [pytest.mark.slow] if FUZZ == "full" else []
# The deadline of one schemathesis run.
FUZZ_SECONDS = 600


@pytest.fixture
def fast_demo_service(shared_services: SharedServices) -> RunningService:
    return shared_services.one({"QA_DEMO_CHUNK_DELAY_MS": "0", "QA_DEMO_PAUSE_SECONDS": "0.05"})


def _schema(service: RunningService) -> dict[str, Any]:
    response = httpx.get(f"{service.url}/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_every_refusal_is_our_error_shape_not_fastapis(openai_service: RunningService) -> None:
    schema = _schema(openai_service)

    assert "HTTPValidationError" not in json.dumps(schema)
    for path, method, operation in _operations(schema):
        # OpenAI's clients get OpenAI's error shape, with our codes in it.
        shape = "OpenAIErrorBody" if path.startswith("/v1/") else "ErrorBody"
        for status, response in operation["responses"].items():
            if int(status) >= 400 and method != "head":
                content = response["content"]["application/json"]["schema"]
                assert content == {"$ref": f"#/components/schemas/{shape}"}, (path, status)
    error = schema["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message", "retryable"}


def test_the_post_body_and_the_stream_are_described(openai_service: RunningService) -> None:
    schema = _schema(openai_service)
    post = schema["paths"]["/ai_write"]["post"]

    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AskBody"}
    ask = schema["components"]["schemas"]["AskBody"]
    assert ask["required"] == ["query"]
    assert ask["additionalProperties"] is False
    assert ask["properties"]["query"]["maxLength"] == 4000
    assert ask["properties"]["prompt"]["enum"] == ["chat", "eli5", "explain", "outline", None]
    assert ask["properties"]["history"]["maxItems"] == 50
    # The stub's provider is not the demo: no scenario to offer.
    assert "scenario" not in ask["properties"]
    for method in ("get", "post"):
        ok = schema["paths"]["/ai_write"][method]["responses"]["200"]
        assert list(ok["content"]) == ["text/event-stream"]
        event = ok["content"]["text/event-stream"]["schema"]
        assert event == {"$ref": "#/components/schemas/StreamEvent"}
        data = schema["components"]["schemas"]["StreamEvent"]["properties"]["data"]
        assert data["contentMediaType"] == "application/json"
        names = [one["$ref"].rsplit("/", 1)[1] for one in data["contentSchema"]["oneOf"]]
        assert names == ["MetaEvent", "TextEvent", "DoneEvent", "ErrorBody"]
        for name in ("meta", "text", "done", "error"):
            assert f"`{name}`" in ok["description"]


def test_scenarios_are_described_where_the_demo_answers(
    fast_demo_service: RunningService,
) -> None:
    schema = _schema(fast_demo_service)
    scenario = schema["components"]["schemas"]["AskBody"]["properties"]["scenario"]
    assert scenario["enum"][0] == "normal"


# Each operation's own settings. The resume routes are told a well-formed id of
# an answer that does not exist: schemathesis 4.32 generates "0" for the
# Last-Event-ID header as a valid value, ignoring its `pattern`, and would
# report our 400 as a valid request refused (ST202); 404 answer_not_found is
# documented. /ai_write is left to generate it, so that its valid requests
# start real answers and their streams are checked; a 400 for such a "0" is
# what the schema promises. A `ticket` it makes up was never issued: 401, as
# documented (a ticket is checked even with keys off), like 404 for an answer.
# The stateful phase (sequences through links it infers: /v1/models to a
# model, /api/chat then its resume) is off: the run stays bounded by examples
# per operation. The chat dialects' rules across messages (the last is the
# user's and not blank; no tools; text parts only) are beyond a JSON schema;
# their descriptions state them, and a body that breaks them is a documented 422
# (400 on /v1/responses, as OpenAI says; and a made-up previous_response_id is a
# documented 404).
SCHEMATHESIS_CONFIG = """
[phases.stateful]
enabled = false

[[operations]]
include-path = "/answers/{answer_id}/events"
parameters = { "header.Last-Event-ID" = "AAAAAAAAAAAAAAAAAAAAAA:0" }

[[operations]]
include-path = "/ai_write"
checks.positive_data_acceptance.expected-statuses = [200, 400, 401, 404]

[[operations]]
include-path = "/v1/chat/completions"
checks.positive_data_acceptance.expected-statuses = [200, 422]

[[operations]]
include-path = "/v1/responses"
checks.positive_data_acceptance.expected-statuses = [200, 400, 404]

[[operations]]
include-path = "/api/chat"
checks.positive_data_acceptance.expected-statuses = [200, 422]
"""


@dataclass(frozen=True)
class FuzzRun:
    report: dict[str, Any]
    # Per operation ("GET /ai_write"), how often each status came back.
    statuses: dict[str, Counter[int]]


def _fuzz(service: RunningService, workdir: Path, examples: int) -> FuzzRun:
    """Schemathesis against the service's /openapi.json; its JSON and NDJSON reports, read."""
    (workdir / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{service.url}/openapi.json",
            "--checks=all",
            f"--max-examples={examples}",
            "--seed=10",
            "--generation-database=none",
            "--request-timeout=20",
            "--workers=1",
            "--no-color",
            "--report=json,ndjson",
            f"--report-dir={workdir}",
        ],
        capture_output=True,
        text=True,
        # CPU-bound (the service and schemathesis): about 50 s on an idle machine,
        # over 240 s beside three other pytest-xdist workers and a busy machine.
        timeout=FUZZ_SECONDS,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
        env=tool_env(),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    (report_path,) = workdir.glob("json-*.json")
    (events_path,) = workdir.glob("ndjson-*.ndjson")
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    with events_path.open(encoding="utf-8") as events:
        for line in events:
            finished = json.loads(line).get("ScenarioFinished")
            if finished is None:
                continue
            recorder = finished["recorder"]
            for interaction in (recorder.get("interactions") or {}).values():
                if interaction.get("response") is not None:
                    statuses[recorder["label"]][interaction["response"]["status_code"]] += 1
    return FuzzRun(json.loads(report_path.read_text(encoding="utf-8")), statuses)


@pytest.mark.timeout(FUZZ_SECONDS + 120)
@pytest.mark.parametrize(
    "provider", [pytest.param(p, marks=FUZZ_MARKS) for p in ("openai", "demo")]
)
def test_real_responses_match_the_schema(
    request: pytest.FixtureRequest, provider: str, tmp_path: Path
) -> None:
    fixture = "openai_service" if provider == "openai" else "fast_demo_service"
    service: RunningService = request.getfixturevalue(fixture)
    operations = {f"{method.upper()} {path}" for path, method, _ in _operations(_schema(service))}

    run = _fuzz(service, tmp_path, EXAMPLES[provider])

    report = run.report
    print(f"schemathesis ({provider}): {report['test_cases']['generated']} cases")
    assert report["failures"] == []
    assert report["errors"] == []
    assert report["operations"]["total"] == report["operations"]["tested"] == len(operations)
    assert report["operations"]["skipped"] == report["operations"]["errored"] == 0
    assert report["test_cases"]["generated"] >= MIN_CASES[provider]
    # Every operation was sent requests, and none answered with a 5xx.
    assert set(run.statuses) == operations
    assert all(status < 500 for counts in run.statuses.values() for status in counts)
    # Valid requests started real answers, whose streams were checked against
    # StreamEvent; not only refusals.
    for name in (
        "GET /ai_write",
        "POST /ai_write",
        "HEAD /ai_write",
        "POST /v1/chat/completions",
        "POST /v1/responses",
    ):
        assert run.statuses[name][200] > 0, (name, run.statuses[name])
