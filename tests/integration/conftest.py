"""Integration fixtures: one upstream stub, and the real service per provider."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.service import RunningService, run_service
from tests.support.upstream_stub import UpstreamStub

# Fake, generated per run: shaped like real keys so redaction is tested for real.
OPENAI_KEY = f"sk-test-{uuid.uuid4().hex}"
GROQ_KEY = f"gsk_test{uuid.uuid4().hex}"

# A short keep-alive puts comment lines among the events of every test.
FAST = {"QA_UPSTREAM_MAX_RETRIES": "0", "QA_LOG_LEVEL": "info", "QA_KEEPALIVE_SECONDS": "0.2"}


def provider_settings(provider: str, stub: UpstreamStub) -> dict[str, str]:
    if provider == "openai":
        return {
            **FAST,
            "QA_PROVIDER": "openai",
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": f"{stub.url}/v1",
        }
    return {
        **FAST,
        "QA_PROVIDER": "groq",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": stub.url,
    }


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def openai_service(stub: UpstreamStub, workdir: Path) -> Iterator[RunningService]:
    with run_service(provider_settings("openai", stub), workdir) as service:
        yield service


@pytest.fixture(scope="session")
def groq_service(stub: UpstreamStub, workdir: Path) -> Iterator[RunningService]:
    with run_service(provider_settings("groq", stub), workdir) as service:
        yield service


@pytest.fixture(params=["openai", "groq"])
def service(request: pytest.FixtureRequest) -> RunningService:
    """The service on each provider in turn, both against the stub."""
    return request.getfixturevalue(f"{request.param}_service")  # type: ignore[no-any-return]


def marker() -> str:
    """A unique string for a query, so the stub picks this test's scripted reply."""
    return f"m{uuid.uuid4().hex[:12]}"
