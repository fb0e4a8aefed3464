"""Container fixtures: the image, built once per run, and the upstream stub on the host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.podman import build_image
from tests.support.upstream_stub import UpstreamStub


@pytest.fixture(scope="session")
def image_build_seconds() -> float:
    return build_image()


@pytest.fixture(scope="session")
def stub() -> Iterator[UpstreamStub]:
    server = UpstreamStub()
    server.start()
    yield server
    server.stop()
