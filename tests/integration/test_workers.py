"""QA_WORKERS=2 over a real Redis: two worker processes on one port answer exactly,
one SIGTERM drains both and ends the service with exit 0, and no second
deployment can join their port."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.daemon import wait_until
from tests.support.providers import marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.resume import Read, read
from tests.support.service import RunningService, run_service, service_env
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

WORKERS = 2
STREAMS = 12
GRACE = 30  # a drain ends with its last answer: room for the 8 s answers on a busy machine


# A second `serve` imports LangChain before it can fail; on a busy machine, seconds.
SECOND_SERVE_SECONDS = 60


@pytest.fixture
def group_settings(stub: UpstreamStub, tmp_path: Path) -> Iterator[dict[str, str]]:
    with run_redis(tmp_path) as redis:
        yield {
            **provider_settings("openai", stub),
            "QA_WORKERS": str(WORKERS),
            "QA_REDIS_URL": redis.url,
            "QA_SHUTDOWN_GRACE_SECONDS": str(GRACE),
        }


@pytest.fixture
def two_workers(group_settings: dict[str, str], tmp_path: Path) -> Iterator[RunningService]:
    with run_service(group_settings, tmp_path) as service:
        # Ready means one worker answered; the other may still be starting
        # (its socket's connections wait in its backlog until it serves).
        port = int(service.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        while not (len(_workers(service)) == WORKERS and all(_listening_each(service, port))):
            assert time.monotonic() < deadline, _listening_each(service, port)
            time.sleep(0.05)
        yield service


def _workers(service: RunningService) -> list[psutil.Process]:
    return psutil.Process(service.process.pid).children()


def _on_port(worker: psutil.Process, port: int, status: str) -> int:
    return sum(
        1
        for c in worker.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == status
    )


def _listening_each(service: RunningService, port: int) -> list[int]:
    return [_on_port(worker, port, psutil.CONN_LISTEN) for worker in _workers(service)]


def _serving_each(service: RunningService, port: int) -> list[int]:
    """How many client connections on `port` each worker holds."""
    return [_on_port(worker, port, psutil.CONN_ESTABLISHED) for worker in _workers(service)]


def test_two_workers_share_the_streams_and_answer_exactly(
    two_workers: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [f"piece {n}\n" for n in range(20)]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.1))
    port = int(two_workers.url.rsplit(":", 1)[1])
    reads: list[Read] = []
    readers = [
        threading.Thread(target=lambda: reads.append(read(two_workers.url, params={"query": key})))
        for _ in range(STREAMS)
    ]

    assert len(_workers(two_workers)) == WORKERS
    for reader in readers:
        reader.start()
    # While every stream is open (2 s each), both workers hold some of them.
    deadline = time.monotonic() + 10
    while sum(_serving_each(two_workers, port)) < STREAMS:
        assert time.monotonic() < deadline, _serving_each(two_workers, port)
        time.sleep(0.05)
    assert all(_serving_each(two_workers, port)), _serving_each(two_workers, port)
    for reader in readers:
        reader.join(20)

    assert len(reads) == STREAMS
    assert all(r.text == "".join(pieces) and "done" in r.last for r in reads)


def _reading(url: str, key: str, into: list[Read | BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            into.append(read(url, params={"query": key}))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            into.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_one_sigterm_drains_every_worker_and_exits_0(
    two_workers: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [f"piece {n} " for n in range(20)]
    # 8 s answers: the probes below must reach the workers while they drain, and
    # on a busy machine the SIGTERM and the first 503 alone took over 2 s.
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.4))
    port = int(two_workers.url.rsplit(":", 1)[1])
    workers = _workers(two_workers)
    result: list[Read | BaseException] = []
    readers = [_reading(two_workers.url, key, result) for _ in range(STREAMS)]
    # Every answer is under way, and both workers hold some of them.
    wait_until(
        lambda: (
            len(stub.exchanges_for(key)) == STREAMS
            and all(e.pieces_written > 0 for e in stub.exchanges_for(key))
        ),
        10,
        "every answer's first piece",
    )
    assert all(_serving_each(two_workers, port)), _serving_each(two_workers, port)

    two_workers.process.send_signal(signal.SIGTERM)
    # The supervisor passes the signal on to each worker.
    wait_until(
        lambda: httpx.get(f"{two_workers.url}/readyz", timeout=5).status_code == 503,
        10,
        "/readyz 503",
    )
    # Each worker drains with its port open: every new connection, whichever
    # worker the kernel gives it to, is told 503 shutting_down, and liveness holds.
    probes = [httpx.get(f"{two_workers.url}/readyz", timeout=5) for _ in range(8)]
    alive = httpx.get(f"{two_workers.url}/healthz", timeout=5)
    code = two_workers.process.wait(timeout=GRACE + 10)
    for reader in readers:
        reader.join(10)

    assert [p.status_code for p in probes] == [503] * len(probes)
    assert {p.json()["error"]["code"] for p in probes} == {"shutting_down"}
    assert alive.status_code == 200
    assert code == 0
    # The answers (8 s) fit in the grace: each completes, on both workers.
    assert len(result) == STREAMS
    for answer in result:
        assert isinstance(answer, Read), answer
        assert answer.text == "".join(pieces)
        assert "done" in answer.last
    _gone, alive_workers = psutil.wait_procs(workers, timeout=5)
    assert not alive_workers
    # Their exit codes are the supervisor's to read: it exits 0 only if each did.


def test_workers_do_not_outlive_a_killed_supervisor(two_workers: RunningService) -> None:
    workers = _workers(two_workers)
    assert len(workers) == WORKERS

    two_workers.process.kill()  # SIGKILL: the supervisor forwards nothing
    two_workers.process.wait(5)

    _gone, alive = psutil.wait_procs(workers, timeout=GRACE + 10)
    assert not alive


def _second_serve(settings: dict[str, str], port: int, workdir: Path) -> tuple[int, str]:
    """Run another `serve` on `port` until it exits: its exit code and output."""
    second = subprocess.Popen(
        [sys.executable, "-m", "qa_service", "serve"],
        env=service_env({**settings, "QA_PORT": str(port)}),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = second.communicate(timeout=SECOND_SERVE_SECONDS)
    except subprocess.TimeoutExpired:
        second.terminate()
        out, _ = second.communicate(timeout=30)
        pytest.fail(f"the second serve is still serving:\n{out.decode(errors='replace')}")
    return second.returncode, out.decode(errors="replace")


@pytest.mark.parametrize("second_workers", [WORKERS, 1])
def test_a_second_serve_on_the_port_exits_saying_address_in_use(
    two_workers: RunningService,
    group_settings: dict[str, str],
    tmp_path: Path,
    second_workers: int,
) -> None:
    """Another deployment (its own keys, limits, provider) on the same port must
    fail to start, not take a share of this one's connections through
    SO_REUSEPORT: with QA_WORKERS > 1 it used to (17 of 40 requests)."""
    port = int(two_workers.url.rsplit(":", 1)[1])
    settings = {**group_settings, "QA_WORKERS": str(second_workers)}

    code, out = _second_serve(settings, port, tmp_path)

    assert code == 3, out  # uvicorn's own code for a bind that failed
    assert "address already in use" in out, out
    assert "Traceback" not in out, out
    if second_workers > 1:  # the supervisor says it in one line, and nothing else
        assert (
            out.strip() == f"qa-service: cannot listen on 127.0.0.1:{port}: address already in use"
        )
    # The first group goes on serving on every worker.
    assert _listening_each(two_workers, port) == [1] * WORKERS
    assert all(httpx.get(f"{two_workers.url}/readyz").is_success for _ in range(10))
