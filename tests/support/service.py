"""Runs the real service (`python -m qa_service serve`) as a subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.daemon import wait_until
from tests.support.ports import free_port

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
        """The JSON log lines written so far; any that is not JSON fails the test.

        A line the service is still writing is left for a later read: a reader
        can see the first page of a line that crosses a page boundary before
        the rest has been copied in.
        """
        text = self.logs()
        whole = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in whole.splitlines() if line.strip()]

    def answer_record(
        self, request_id: str, timeout: float = 10.0, cache: str | None = None
    ) -> dict[str, Any]:
        """The one log line of an answer, once its generation has ended.

        With the answer cache on, a miss writes two lines under one request id,
        the provider call's (`cache` "source") and the client's ("miss"):
        `cache` picks one.
        """

        def found() -> list[dict[str, Any]]:
            return [
                r
                for r in self.log_records()
                if r.get("message") == "answer"
                and r.get("request_id") == request_id
                and (cache is None or r.get("cache") == cache)
            ]

        records = wait_until(found, timeout, f"the answer log line of {request_id}")
        assert len(records) == 1, records
        return records[0]


@contextmanager
def open_stream(service: RunningService, query: str) -> Iterator[httpx.Response]:
    """A stream held open (its headers read) until the block exits, which hangs up."""
    with httpx.stream(
        "GET", f"{service.url}/ai_write", params={"query": query}, timeout=10
    ) as response:
        yield response


def service_env(settings: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: nothing from the developer's shell leaks in."""
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT", "TMPDIR")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    # Under `coverage run`, these make the service measure itself too.
    env.update({k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")})
    env.update({"QA_HOST": "127.0.0.1", "QA_PROMPTS_DIR": str(PROMPTS), "PYTHONUNBUFFERED": "1"})
    env.update(settings)
    return env


def tool_env() -> dict[str, str]:
    """This process's environment without coverage's variables, for a Python tool the
    tests run against the service (schemathesis, podman-compose).

    Under `coverage run` (patch = subprocess) every Python subprocess measures
    itself: useless in a tool that never imports qa_service, and it nearly
    doubled schemathesis' run (30 examples per operation: 25 s against 14 s).
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}


@contextmanager
def run_service(
    settings: Mapping[str, str],
    workdir: Path,
    open_files: tuple[int, int] | None = None,
    python: str = sys.executable,
) -> Iterator[RunningService]:
    """Start the service, wait until /readyz says ready, stop it afterwards.

    `open_files`: the (soft, hard) limit on open files it starts with;
    `python`: the interpreter it runs on (benchmarks/interpreters.py).
    """
    with run_services([settings], workdir, open_files, python) as (service,):
        yield service


@contextmanager
def run_services(
    settings: Sequence[Mapping[str, str]],
    workdir: Path,
    open_files: tuple[int, int] | None = None,
    python: str = sys.executable,
) -> Iterator[list[RunningService]]:
    """Start one service per entry of `settings` at once, wait until each is ready,
    stop them all afterwards.

    Started together, their imports (most of a start) overlap on the machine's cores.
    """
    services: list[RunningService] = []
    try:
        for one in settings:
            services.append(_launch(one, workdir, open_files, python))
        for service in services:
            _wait_ready(service)
        yield services
    finally:
        for service in services:
            if service.process.poll() is None:
                service.process.terminate()
        for service in services:
            _reap(service.process)


class SharedServices:
    """Running services a whole pytest session shares, one per distinct settings.

    For tests that leave a service as they found it: no kill, stop or drain,
    no state a later test could trip over (a client's spent rate limit, a
    filled budget). Such a test asks for its settings and gets the service
    an earlier test started with the same ones, or a new one. A test that
    compares metrics or logs reads deltas, or finds its own records by
    request id. At most `keep` services stay running; the one used least
    recently is stopped to make room.
    """

    def __init__(self, workdir: Path, keep: int = 8) -> None:
        self._workdir = workdir
        self._keep = keep
        self._running: OrderedDict[tuple[tuple[str, str], ...], RunningService] = OrderedDict()

    def get(self, settings: Mapping[str, str], replicas: int = 1) -> list[RunningService]:
        """`replicas` services with these settings (replica i is always the same one)."""
        base = tuple(sorted(settings.items()))
        keys = [(*base, ("replica", str(i))) for i in range(replicas)]
        for key in keys:
            alive = self._running.get(key)
            if alive is not None and alive.process.poll() is not None:
                del self._running[key]  # it died: start it afresh
        missing = [key for key in keys if key not in self._running]
        started = [_launch(settings, self._workdir) for _ in missing]
        try:
            for service in started:
                _wait_ready(service)
        except BaseException:
            for service in started:
                _stop(service.process)
            raise
        self._running.update(zip(missing, started, strict=True))
        for key in keys:
            self._running.move_to_end(key)
        while len(self._running) > max(self._keep, len(keys)):
            _, oldest = self._running.popitem(last=False)
            _stop(oldest.process)
        return [self._running[key] for key in keys]

    def one(self, settings: Mapping[str, str]) -> RunningService:
        (service,) = self.get(settings)
        return service

    def close(self) -> None:
        for service in self._running.values():
            if service.process.poll() is None:
                service.process.terminate()
        for service in self._running.values():
            _reap(service.process)
        self._running.clear()


def _launch(
    settings: Mapping[str, str],
    workdir: Path,
    open_files: tuple[int, int] | None = None,
    python: str = sys.executable,
) -> RunningService:
    port = free_port()
    log_path = workdir / f"service-{port}.log"
    env = service_env({**settings, "QA_PORT": str(port)})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [python, "-m", "qa_service", "serve"],
            env=env,
            cwd=workdir,  # no stray .env from the repository
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if open_files is None else lambda: _limit_open_files(open_files),
        )
    return RunningService(f"http://127.0.0.1:{port}", log_path, process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    _reap(process)


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _limit_open_files(limits: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


# Generous: a start is mostly imports, and beside a CPU hog under coverage
# it has taken over 30 s. A service that exits is reported at once.
START_TIMEOUT = 90.0


def _wait_ready(service: RunningService, timeout: float = START_TIMEOUT) -> None:
    def ready() -> bool:
        if service.process.poll() is not None:
            raise RuntimeError(f"service exited at start-up:\n{service.logs()}")
        try:
            return httpx.get(f"{service.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, timeout, f"service {service.url} ready", describe=service.logs)
