"""docker-compose.yml brought up whole with podman-compose, on images built here.

The file names `redis:7-alpine`, `nginx:1.27-alpine` and builds the service on
`python:3.11-slim`; no registry can be reached from these machines, so an
override file (written per run, next to nothing in the repository) swaps in
stand-ins built from Debian's packages on the local base image, and this run's
service image. Everything else (the services, the replicas, the network, the
environment, the hardening and deploy/nginx.conf) is the shipped file's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.daemon import wait_until
from tests.support.podman import BASE_IMAGE, IMAGE, PODMAN, ULIMITS, podman
from tests.support.ports import free_port
from tests.support.service import REPO, tool_env

COMPOSE_FILE = REPO / "docker-compose.yml"

# Stand-ins for the official images, from Debian's packages. Like the base
# image, they are kept between runs (a few seconds of apt each to rebuild) and
# named by a hash of their recipe, so a changed recipe builds a new one.
_REDIS_RECIPE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server \\
    && rm -rf /var/lib/apt/lists/*
# The official image builds redis with protected mode off, so other containers on
# the compose network may connect without a password; Debian's binary has it on.
RUN printf '#!/bin/sh\\nif [ "$1" = redis-server ]; then shift; \\
exec redis-server --protected-mode no "$@"; fi\\nexec "$@"\\n' > /entrypoint.sh \\
    && chmod +x /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["redis-server"]
"""

_NGINX_RECIPE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx \\
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \\
    && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
# As in the official image: /etc/nginx/nginx.conf includes conf.d/*.conf in its
# http block, and the server runs in the foreground.
CMD ["nginx", "-g", "daemon off;"]
"""


def _recipe_image(name: str, recipe: str) -> str:
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return f"localhost/qa-compose-{name}:{digest}"


REDIS_IMAGE = _recipe_image("redis", _REDIS_RECIPE)
NGINX_IMAGE = _recipe_image("nginx", _NGINX_RECIPE)


def build_stand_in_images(workdir: Path) -> None:
    """Build the redis and nginx stand-ins that are not there yet."""
    for image, recipe in ((REDIS_IMAGE, _REDIS_RECIPE), (NGINX_IMAGE, _NGINX_RECIPE)):
        if podman("image", "exists", image, check=False).returncode == 0:
            continue
        context = workdir / image.rsplit("/", 1)[1].replace(":", "-")
        context.mkdir(parents=True, exist_ok=True)
        (context / "Containerfile").write_text(recipe)
        podman(
            "build",
            *ULIMITS,
            "--format=docker",
            "--layers=false",
            "--force-rm",
            "--network=host",  # apt reaches Debian's mirror
            f"--tag={image}",
            str(context),
            timeout=600,
        )


def override_file(port: int, env: dict[str, str]) -> str:
    """The compose override: local images, this run's service image, a free host port."""
    override = {
        "services": {
            "redis": {"image": REDIS_IMAGE},
            "qa-service": {
                "image": IMAGE,
                "environment": env,
            },
            "nginx": {
                "image": NGINX_IMAGE,
                "ports": [f"127.0.0.1:{port}:8000"],
            },
        }
    }
    # JSON is YAML; `!override` (which compose merges as a replacement, not an
    # addition) is the one thing JSON cannot say, so it is spliced in as text.
    text = json.dumps(override, indent=2)
    return text.replace('"ports": [', '"ports": !override [')


@dataclass
class Stack:
    project: str
    files: list[Path]
    url: str

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _podman_compose(self.project, self.files, *args, timeout=timeout)

    def containers(self, service: str) -> list[str]:
        """Names of the service's containers, in replica order."""
        result = podman(
            "ps",
            "--all",
            "--format=json",
            f"--filter=label=io.podman.compose.project={self.project}",
            f"--filter=label=com.docker.compose.service={service}",
        )
        entries = json.loads(result.stdout or "[]")
        return sorted(name for entry in entries for name in entry["Names"])

    def logs(self, container: str) -> str:
        result = podman("logs", container, check=False)
        return result.stdout + result.stderr

    def all_logs(self) -> str:
        names = [
            name
            for service in ("redis", "qa-service", "nginx")
            for name in self.containers(service)
        ]
        return "\n".join(f"== {name}\n{self.logs(name)}" for name in names)


def _podman_compose(
    project: str, files: list[Path], *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    flags = ["--project-name", project]
    for file in files:
        flags += ["--file", str(file)]
    # podman-compose adds --podman-args after each podman subcommand, where
    # podman accepts its global flags too; run and create also get the ulimits.
    command = [
        sys.executable,
        "-m",
        "podman_compose",
        *flags,
        f"--podman-args={shlex.join(PODMAN[1:])}",
        f"--podman-run-args={shlex.join(ULIMITS)}",
        *args,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        check=False,
        env=tool_env(),
    )


@contextmanager
def run_stack(workdir: Path, env: dict[str, str], timeout: float = 120) -> Iterator[Stack]:
    """`podman-compose up` of docker-compose.yml with the override; `down` at the end."""
    build_stand_in_images(workdir)
    port = free_port()
    override = workdir / "compose.override.yml"
    override.write_text(override_file(port, env))
    stack = Stack(f"qa-compose-{os.getpid()}", [COMPOSE_FILE, override], f"http://127.0.0.1:{port}")
    try:
        # Every image is here already; never fall back to building on the real base.
        up = stack.compose("up", "--detach", "--no-build", timeout=timeout)
        if up.returncode != 0:
            raise RuntimeError(f"podman-compose up failed:\n{up.stdout}\n{up.stderr}")
        _wait_healthy(stack, timeout)
        yield stack
    finally:
        stack.compose("down", "--timeout=0", timeout=120)
        _remove_leftovers(stack.project)


def _wait_healthy(stack: Stack, timeout: float) -> None:
    """Each replica passes its image's HEALTHCHECK, and nginx answers /healthz."""
    replicas = stack.containers("qa-service")
    if len(replicas) != 2:
        raise RuntimeError(f"expected 2 replicas, found {replicas}:\n{stack.all_logs()}")
    pending = set(replicas)

    def healthy() -> bool:
        for name in sorted(pending):
            if podman("healthcheck", "run", name, check=False).returncode == 0:
                pending.discard(name)
        if pending:
            return False
        try:
            return httpx.get(f"{stack.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(healthy, timeout, "the compose stack healthy", interval=0.3, describe=stack.all_logs)


def _remove_leftovers(project: str) -> None:
    """Whatever `down` left (a failed `up` can leave containers, a pod, a network)."""
    listed = podman(
        "ps", "--all", "--quiet", f"--filter=label=io.podman.compose.project={project}", check=False
    )
    ids = listed.stdout.split()
    if ids:
        podman("rm", "--force", "--time=0", *ids, check=False)
    podman("pod", "rm", "--force", f"pod_{project}", check=False)
    podman("network", "rm", "--force", f"{project}_default", check=False)
