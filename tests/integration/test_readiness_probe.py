"""QA_READYZ_PROBE: /readyz asks the provider's GET /models, and keeps the answer a while."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.providers import OPENAI_KEY, provider_settings
from tests.support.service import RunningService, SharedServices
from tests.support.upstream_stub import UpstreamStub

TTL = 2.0


@pytest.fixture(params=["openai", "groq"])
def probing_service(
    request: pytest.FixtureRequest, stub: UpstreamStub, shared_services: SharedServices
) -> RunningService:
    settings = {
        **provider_settings(request.param, stub),
        "QA_READYZ_PROBE": "true",
        "QA_READYZ_PROBE_TTL_SECONDS": str(TTL),
    }
    return shared_services.one(settings)


def _wait_for_status(
    service: RunningService, status: int, timeout: float = TTL + 5
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{service.url}/readyz", timeout=10)
        if response.status_code == status:
            return response
        assert time.monotonic() < deadline, f"/readyz stayed {response.status_code}"
        time.sleep(0.1)


def test_readyz_probes_the_provider_once_per_interval(
    probing_service: RunningService, stub: UpstreamStub
) -> None:
    # Start just after a probe, so the polls below fall inside one interval.
    _wait_for_status(probing_service, 200)
    before = stub.models_requests
    started = time.monotonic()
    for _ in range(5):
        assert httpx.get(f"{probing_service.url}/readyz").status_code == 200
    elapsed = time.monotonic() - started

    assert stub.models_requests - before <= 1 + int(elapsed / TTL)


def test_readyz_fails_while_the_provider_does_not_answer(
    probing_service: RunningService, stub: UpstreamStub
) -> None:
    stub.models_status = 503
    try:
        refused = _wait_for_status(probing_service, 503)
    finally:
        stub.models_status = 200
    error = refused.json()["error"]
    assert error["code"] == "not_ready"
    assert error["retryable"] is True
    assert "readiness probe" in error["message"]
    _wait_for_status(probing_service, 200)

    failures = [r for r in probing_service.log_records() if "probe failed" in r["message"]]
    assert failures
    assert "upstream_status=503" in failures[0]["message"]
    assert OPENAI_KEY not in probing_service.logs()


def test_readyz_does_not_probe_unless_asked(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    before = stub.models_requests
    assert httpx.get(f"{openai_service.url}/readyz").status_code == 200
    assert stub.models_requests == before
