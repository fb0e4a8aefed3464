"""The replica tests' own parts work: a real redis-server, and the shipped nginx config
in front of two service processes (round robin, events unbuffered, headers passed on).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.nginx import Nginx, run_nginx
from tests.support.redis_server import RedisServer, run_redis
from tests.support.service import RunningService, run_services
from tests.support.sse import read_stream

pytestmark = pytest.mark.replicas

# Slow enough that an answer is still being written when its first event arrives.
DEMO = {"QA_PROVIDER": "demo", "QA_DEMO_CHUNK_DELAY_MS": "10"}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningService]]:
    workdir = tmp_path_factory.mktemp("replicas")
    with run_services([DEMO, DEMO], workdir) as pair:
        yield pair


@pytest.fixture(scope="module")
def proxy(
    replicas: list[RunningService], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Nginx]:
    backends = [service.url.removeprefix("http://") for service in replicas]
    with run_nginx(backends, tmp_path_factory.mktemp("nginx")) as nginx:
        yield nginx


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with run_redis(tmp_path) as server:
        yield server


def _served_by(replicas: list[RunningService], request_id: str) -> list[int]:
    deadline = time.monotonic() + 5
    while True:
        found = [i for i, s in enumerate(replicas) if request_id in s.logs()]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_redis_restart_keeps_the_port_and_forgets_everything(redis_server: RedisServer) -> None:
    url, pid = redis_server.url, redis_server.pid
    with redis_server.client() as client:
        client.set("k", "v")
    redis_server.restart()
    assert redis_server.url == url
    assert redis_server.pid != pid
    with redis_server.client() as client:
        assert client.get("k") is None  # no persistence


def test_redis_command_stats_count_calls_and_bytes(redis_server: RedisServer) -> None:
    before = redis_server.command_stats()
    with redis_server.client() as client:
        for n in range(3):
            client.xadd("s", {"e": "x" * 100}, id=f"0-{n + 1}")
    used = redis_server.command_stats() - before
    assert used.calls["xadd"] == 3
    assert used.input_bytes > 300


def test_redis_kill_is_a_crash(redis_server: RedisServer) -> None:
    redis_server.kill()
    assert redis_server.process is not None
    assert redis_server.process.returncode == -9


def test_nginx_balances_round_robin_over_both_replicas(
    proxy: Nginx, replicas: list[RunningService]
) -> None:
    served = []
    for _ in range(4):
        request_id = uuid.uuid4().hex
        stream = read_stream(
            proxy.url, params={"query": "photosynthesis"}, headers={"X-Request-ID": request_id}
        )
        assert stream.status == 200
        assert stream.kinds[-1] == "done"
        assert stream.headers["x-request-id"] == request_id
        served += _served_by(replicas, request_id)
    assert sorted(served) == [0, 0, 1, 1]


def test_nginx_passes_each_event_on_as_it_is_written(proxy: Nginx) -> None:
    # Unbuffered end to end (deploy/nginx.conf says proxy_buffering off, and the
    # service sends X-Accel-Buffering: no, so either alone passes this): the
    # first text arrives while the answer is still being written,
    # about 10 ms a piece (about 100 pieces), and the last well after it.
    arrived: list[float] = []
    with httpx.stream(
        "GET", f"{proxy.url}/ai_write", params={"query": "buffering"}, timeout=30
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: ") and "text" in json.loads(line[6:]):
                arrived.append(time.monotonic())
    assert len(arrived) > 10
    assert arrived[-1] - arrived[0] > 0.5


def test_nginx_restart_cuts_streams_and_serves_again_on_the_same_port(proxy: Nginx) -> None:
    url = proxy.url
    with httpx.stream(
        "GET", f"{proxy.url}/ai_write", params={"query": "restart"}, timeout=30
    ) as response:
        lines = response.iter_lines()
        deadline = time.monotonic() + 10  # keep-alive comments alone would never end it
        while not next(lines).startswith("data: "):
            assert time.monotonic() < deadline, "no event through the proxy"
        proxy.restart()
        with pytest.raises(httpx.HTTPError):
            for _ in lines:
                pass
    assert proxy.url == url
    assert httpx.get(f"{proxy.url}/healthz", timeout=5).status_code == 200
