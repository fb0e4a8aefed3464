"""Building and running the image with podman, with the flags these machines need.

See docs/CONTAINER_TESTS.md: runc instead of crun, explicit ulimits, host
network, the stand-in base image, and why a run removes what it built.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.service import REPO

# One tag per run, so runs from two checkouts on one machine never build over,
# or remove, each other's image.
IMAGE = f"localhost/qa-service:test-{os.getpid()}"
BASE_IMAGE = "localhost/python-base:bookworm"  # scripts/container-base.sh
PODMAN = ["podman", "--runtime", "/usr/sbin/runc"]
ULIMITS = ["--ulimit", "nofile=1024:4096", "--ulimit", "nproc=1024:2048"]


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def require_podman() -> None:
    if shutil.which("podman") is None or not Path("/usr/sbin/runc").exists():
        raise RuntimeError("podman and runc are needed: ./scripts/test.sh installs them")


def build_image() -> float:
    """Build the image (on the stand-in base); returns the seconds it took."""
    require_podman()
    subprocess.run([str(REPO / "scripts" / "container-base.sh")], check=True, timeout=1200)
    started = time.monotonic()
    podman(
        "build",
        *ULIMITS,
        "--format=docker",  # OCI images drop HEALTHCHECK
        # No intermediate images: the run removes its image at the end, so a
        # layer cache would only be left behind as dangling images.
        "--layers=false",
        "--force-rm",
        "--network=host",
        f"--build-arg=BASE_IMAGE={BASE_IMAGE}",
        f"--tag={IMAGE}",
        str(REPO),
        timeout=1200,
    )
    return time.monotonic() - started


def remove_image() -> None:
    """Remove this run's image. The stand-in base stays, on purpose (docs/CONTAINER_TESTS.md)."""
    podman("rmi", "--force", IMAGE, check=False)
    if podman("image", "exists", IMAGE, check=False).returncode == 0:
        raise RuntimeError(f"podman image {IMAGE} could not be removed")


def image_config() -> dict[str, Any]:
    inspected: list[dict[str, Any]] = json.loads(podman("image", "inspect", IMAGE).stdout)
    return inspected[0]


@dataclass
class Container:
    name: str
    url: str

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> str:
        return podman("exec", self.name, *command).stdout

    def state(self) -> dict[str, Any]:
        inspected: list[dict[str, Any]] = json.loads(podman("inspect", self.name).stdout)
        return dict(inspected[0]["State"])


@contextmanager
def run_container(name: str, port: int, env: Mapping[str, str]) -> Iterator[Container]:
    name = f"{name}-{os.getpid()}"  # like IMAGE: never another run's container
    podman("rm", "--force", name, check=False)
    env_flags = [f"--env={key}={value}" for key, value in {**env, "QA_PORT": str(port)}.items()]
    # The same hardening as docker-compose.yml, so its settings are proved to work.
    hardening = [
        "--read-only",
        "--tmpfs=/tmp",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
    ]
    podman(
        "run",
        *ULIMITS,
        *hardening,
        "--network=host",
        "--detach",
        f"--name={name}",
        *env_flags,
        IMAGE,
    )
    container = Container(name, f"http://127.0.0.1:{port}")
    try:
        _wait_ready(container)
        yield container
    finally:
        podman("rm", "--force", "--time=0", name, check=False)


def _wait_ready(container: Container, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{container.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"container not ready:\n{container.logs()}")
