"""Container fixtures: the image, built once per run and removed at its end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.podman import build_image, remove_image


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The first run builds the stand-in base image and installs the locked
    # dependencies into the image: minutes, bounded by podman.py's own timeouts.
    for item in items:
        if item.path.parent.name == "container":
            item.add_marker(pytest.mark.container)
            item.add_marker(pytest.mark.timeout(1800))


@pytest.fixture(scope="session")
def image_build_seconds() -> Iterator[float]:
    try:
        yield build_image()
    finally:
        remove_image()
