"""Container fixtures: the image, built once per run and removed at its end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.podman import build_image, remove_image


@pytest.fixture(scope="session")
def image_build_seconds() -> Iterator[float]:
    try:
        yield build_image()
    finally:
        remove_image()
