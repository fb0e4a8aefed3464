"""Runs the real service (`python -m qa_service serve`) as a subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
PROMPTS = REPO / "prompts"


@dataclass
class RunningService:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines; any line that is not JSON fails the test."""
        return [json.loads(line) for line in self.logs().splitlines() if line.strip()]

    def answer_record(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The one log line of an answer, once its generation has ended."""
        deadline = time.monotonic() + timeout
        while True:
            records = [
                r
                for r in self.log_records()
                if r.get("message") == "answer" and r.get("request_id") == request_id
            ]
            if records:
                assert len(records) == 1, records
                return records[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer log line for {request_id}")
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(settings: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: nothing from the developer's shell leaks in."""
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    # Under `coverage run`, these make the service measure itself too.
    env.update({k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")})
    env.update({"QA_HOST": "127.0.0.1", "QA_PROMPTS_DIR": str(PROMPTS), "PYTHONUNBUFFERED": "1"})
    env.update(settings)
    return env


@contextmanager
def run_service(
    settings: Mapping[str, str], workdir: Path, open_files: tuple[int, int] | None = None
) -> Iterator[RunningService]:
    """Start the service, wait until /readyz says ready, stop it afterwards.

    `open_files`: the (soft, hard) limit on open files it starts with.
    """
    port = free_port()
    log_path = workdir / f"service-{port}.log"
    env = service_env({**settings, "QA_PORT": str(port)})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "qa_service", "serve"],
            env=env,
            cwd=workdir,  # no stray .env from the repository
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if open_files is None else lambda: _limit_open_files(open_files),
        )
    service = RunningService(f"http://127.0.0.1:{port}", log_path, process)
    try:
        _wait_ready(service)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _limit_open_files(limits: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def _wait_ready(service: RunningService, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"service exited at start-up:\n{service.logs()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"service not ready after {timeout}s:\n{service.logs()}")
