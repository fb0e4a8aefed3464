"""Integration fixtures: the service on each provider in turn."""

from __future__ import annotations

import pytest

from tests.support.service import RunningService


@pytest.fixture(params=["openai", "groq"])
def service(request: pytest.FixtureRequest) -> RunningService:
    """The service on each provider in turn, both against the stub."""
    return request.getfixturevalue(f"{request.param}_service")  # type: ignore[no-any-return]
