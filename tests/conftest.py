"""Fixtures every suite shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.providers import CANCEL_ON_HANGUP, provider_settings
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


# The shared services cancel an answer as soon as its client hangs up
# (CANCEL_ON_HANGUP), which the hang-up and cancellation tests measure. The
# resume tests start services of their own with a grace period.


@pytest.fixture(scope="session")
def openai_service(stub: UpstreamStub, workdir: Path) -> Iterator[RunningService]:
    settings = {**provider_settings("openai", stub), **CANCEL_ON_HANGUP}
    with run_service(settings, workdir) as service:
        yield service


@pytest.fixture(scope="session")
def groq_service(stub: UpstreamStub, workdir: Path) -> Iterator[RunningService]:
    settings = {**provider_settings("groq", stub), **CANCEL_ON_HANGUP}
    with run_service(settings, workdir) as service:
        yield service
