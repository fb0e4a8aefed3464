"""Fixtures every suite shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.providers import CANCEL_ON_HANGUP, provider_settings
from tests.support.service import RunningService, SharedServices
from tests.support.upstream_stub import UpstreamStub


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Work units for pytest-xdist's --dist loadgroup (scripts/test.sh).

    A module's tests stay together on one worker, with its module fixtures
    (a Redis topology, an nginx fleet) and the services it shares. The `slow`
    tests, which load the machine on purpose (hundreds of streams, floods,
    fuzzing, drains), make one unit of their own: they run one at a time, as
    they were written to, beside the lighter tests only. Side by side, on two
    cores, they starved each other's services past their deadlines. A slow
    test marked `beside_others` (the soak: minutes of moderate traffic, judged
    on growth, never on speed) keeps its module's group, so its minutes do not
    lengthen the slow lane, which is the run's longest.
    """
    for item in items:
        slow_lane = item.get_closest_marker("slow") and not item.get_closest_marker("beside_others")
        group = "slow" if slow_lane else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


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
def shared_services(workdir: Path) -> Iterator[SharedServices]:
    """Services the session shares, one per distinct settings (see SharedServices):
    for tests that leave a service as they found it. A test that kills, stops or
    drains its service, or spends a limit for good, starts its own (run_service)."""
    services = SharedServices(workdir)
    yield services
    services.close()


# The shared services cancel an answer as soon as its client hangs up
# (CANCEL_ON_HANGUP), which the hang-up and cancellation tests measure. The
# resume tests start services of their own with a grace period;
# graced_openai_service has the default one, for the dialects' hang-up rule.


@pytest.fixture
def openai_service(stub: UpstreamStub, shared_services: SharedServices) -> RunningService:
    return shared_services.one({**provider_settings("openai", stub), **CANCEL_ON_HANGUP})


@pytest.fixture
def graced_openai_service(stub: UpstreamStub, shared_services: SharedServices) -> RunningService:
    """The default resume grace (QA_RESUME_GRACE_SECONDS, 5 s): a hang-up cancels
    only where its client cannot resume (docs/PROTOCOL.md, "Hang-ups")."""
    return shared_services.one(provider_settings("openai", stub))


@pytest.fixture
def groq_service(stub: UpstreamStub, shared_services: SharedServices) -> RunningService:
    return shared_services.one({**provider_settings("groq", stub), **CANCEL_ON_HANGUP})
