"""Integration fixtures: the service on each provider in turn, and a start-up refused in process."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from qa_service import cli, server
from qa_service.observability import logs
from tests.support.redis_tls import TlsRedisServer, run_tls_redis
from tests.support.redis_topologies import (
    RedisCluster,
    SentinelSet,
    run_redis_cluster,
    run_sentinel_set,
)
from tests.support.service import RunningService, service_env


@pytest.fixture(params=["openai", "groq"])
def service(request: pytest.FixtureRequest) -> RunningService:
    """The service on each provider in turn, both against the stub."""
    return request.getfixturevalue(f"{request.param}_service")  # type: ignore[no-any-return]


# Redis as operators run it (tests/support/redis_topologies.py, redis_tls.py), one of each per
# module that asks: each takes seconds to start. A test that kills a primary
# starts its own with the run_* context managers, under its tmp_path.


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedisServer]:
    with run_tls_redis(tmp_path_factory.mktemp("redis-tls")) as server:
        yield server


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    with run_sentinel_set(tmp_path_factory.mktemp("redis-sentinel")) as servers:
        yield servers


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with run_redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


RefusedStart = Callable[[Mapping[str, str], Path], str]


@pytest.fixture
def refused_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> RefusedStart:
    """`qa-service serve` run in this process with `settings` as its whole environment
    (as run_service gives a subprocess) and `workdir` as its directory; it must
    refuse to start, with exit status 2 and one line on stderr, which is returned.

    Every refusal happens before the server would start, so a process of its own
    adds nothing but two seconds of imports; test_startup.py keeps one refusal
    of each kind as a real process. Two seams keep this process as it was: the
    service's logging set-up (it would take over the root logger) is skipped,
    and reaching the open-file limit, the first step after the configuration,
    fails the test instead of starting a server.
    """

    def run(settings: Mapping[str, str], workdir: Path) -> str:
        env = service_env(settings)
        with monkeypatch.context() as patch:
            for name in list(os.environ):
                if name not in env:
                    patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            patch.chdir(workdir)
            patch.setattr(logs, "configure_logging", _leave_logging_alone)
            patch.setattr(server, "raise_open_file_limit", _went_on_to_serve)
            capsys.readouterr()
            status = cli.main(["serve", "--port", "0"])
            out, err = capsys.readouterr()
        assert status == 2, (status, out, err)
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        return lines[0]

    return run


def _leave_logging_alone(*args: Any, **kwargs: Any) -> None:
    pass


def _went_on_to_serve() -> tuple[int, int]:
    raise AssertionError("the configuration was accepted: the service would start")
