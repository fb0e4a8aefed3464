"""Each route's class says its refusals' shape and whether they count as refused answers.

In process: a refusal is decided before any response starts, so nothing here
needs a real server (tests/integration/ covers the streams).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from qa_service.app import create_app
from qa_service.config import Settings
from tests.support.in_process import LOOPBACK

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
OPENAI_KEYS = {"message", "type", "param", "code"}
NATIVE_KEYS = {"code", "message", "retryable"}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(_env_file=None, provider="demo", prompts_dir=PROMPTS)  # type: ignore[call-arg]
    with TestClient(create_app(settings), base_url=LOOPBACK) as client:
        yield client


def refused_answers(client: TestClient, code: str) -> float:
    registry = client.app.state.telemetry.registry  # type: ignore[attr-defined]
    labels = {"provider": "demo", "model": "demo-writer", "outcome": "refused", "code": code}
    return registry.get_sample_value("qa_requests_total", labels) or 0.0


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "keys", "counted"),
    [
        ("GET", "/ai_write?query=", None, 422, "query_required", NATIVE_KEYS, True),
        (
            "POST",
            "/api/chat",
            {"id": "c", "messages": []},
            422,
            "invalid_request",
            NATIVE_KEYS,
            True,
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "nope"},
            422,
            "invalid_request",
            OPENAI_KEYS,
            True,
        ),
        ("GET", "/v1/models/nope", None, 404, "model_not_found", OPENAI_KEYS, False),
        ("GET", "/answers/short/events", None, 404, "answer_not_found", NATIVE_KEYS, False),
        ("POST", "/stream-tickets", {"query": ""}, 422, "query_required", NATIVE_KEYS, False),
        ("GET", "/v1/embeddings", None, 404, "not_found", OPENAI_KEYS, False),
        ("GET", "/nowhere", None, 404, "not_found", NATIVE_KEYS, False),
    ],
)
def test_a_refusal_takes_its_routes_shape_and_counts_only_where_the_route_starts_answers(
    client: TestClient,
    method: str,
    path: str,
    body: object,
    status: int,
    code: str,
    keys: set[str],
    counted: bool,
) -> None:
    before = refused_answers(client, code)

    response = client.request(method, path, json=body)

    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == keys
    assert error["code"] == code
    assert refused_answers(client, code) - before == (1 if counted else 0)


@pytest.mark.parametrize(
    ("method", "path", "allow", "keys"),
    [
        ("GET", "/v1/chat/completions", "POST", OPENAI_KEYS),
        ("OPTIONS", "/v1/models", "GET", OPENAI_KEYS),
        ("DELETE", "/ai_write", "GET, HEAD, POST", NATIVE_KEYS),
        ("POST", "/healthz", "GET, HEAD", NATIVE_KEYS),
    ],
)
def test_a_wrong_method_names_every_method_the_path_takes_in_the_paths_dialect(
    client: TestClient, method: str, path: str, allow: str, keys: set[str]
) -> None:
    response = client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert set(response.json()["error"]) == keys
