"""Container fixtures: the image, built once per run."""

from __future__ import annotations

import pytest

from tests.support.podman import build_image


@pytest.fixture(scope="session")
def image_build_seconds() -> float:
    return build_image()
