"""Fixtures every suite shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.upstream_stub import UpstreamStub


@pytest.fixture(scope="session")
def stub() -> Iterator[UpstreamStub]:
    """The provider stub on 127.0.0.1, for the service and the container alike."""
    server = UpstreamStub()
    server.start()
    yield server
    server.stop()
