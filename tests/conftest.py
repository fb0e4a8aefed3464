"""Fixtures every suite shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.providers import provider_settings
from tests.support.service import RunningService, run_service
from tests.support.upstream_stub import UpstreamStub


@pytest.fixture(scope="session")
def stub() -> Iterator[UpstreamStub]:
    """The provider stub on 127.0.0.1, for the service and the container alike."""
    server = UpstreamStub()
    server.start()
    yield server
    server.stop()


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
