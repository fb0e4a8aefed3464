"""Draining, proved as processes: two replicas on one Redis behind the shipped nginx,
20 answers streaming, and one replica stopped by PID, with SIGTERM (a drain:
every answer completes, exactly, with one upstream call each) and with SIGKILL
(a crash: what clients see is what docs/PROTOCOL.md says).

Each replica has its own provider key, so the stub tells which replica
generates which answer from the moment it is asked.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import wait_until
from tests.support.nginx import Nginx, run_nginx
from tests.support.providers import marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.resume import read, seqs
from tests.support.resuming_reader import ResumedRead, read_resuming
from tests.support.service import RunningService, run_services
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

ANSWERS = 20
# Generous beside a busy machine: the longest answer takes 10 s on an idle one,
# and must fit. A drain ends when its last answer does, so a long grace costs
# nothing; 20 s was too short beside three other pytest-xdist workers (the
# 10 s answer was cancelled at the grace's end).
GRACE = 60
PIECE_DELAY = 0.05
SHORT = 60  # 3 s
LONG = 140  # 7 s
# The one answer read only on the other replica: it outlasts every connection
# to the stopping one, so only the answer itself can hold that replica open.
LONGEST = 200  # 10 s
# Every read, and every wait of the test, ends by then.
DEADLINE = GRACE + 30.0
# "At once", with room for a busy machine: a deadline, not a measurement.
READYZ_WITHIN = 10.0


@dataclass
class Fleet:
    stopping: RunningService
    staying: RunningService
    nginx: Nginx
    keys: dict[str, str]  # each replica's provider key, by replica url


@dataclass
class Client:
    query: str
    pieces: list[str]
    read: ResumedRead
    done: Future[ResumedRead]
    hang_up: threading.Event

    def producer_key(self, stub: UpstreamStub) -> str:
        (exchange,) = stub.exchanges_for(self.query)
        return exchange.headers["authorization"].removeprefix("Bearer ")


@contextmanager
def _fleet(stub: UpstreamStub, workdir: Path, **extra: str) -> Iterator[Fleet]:
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(workdir))
        keys = [f"sk-test-drain-{n}-{marker()}" for n in range(2)]
        settings = [
            {
                **provider_settings("openai", stub),
                "OPENAI_API_KEY": key,
                "QA_REDIS_URL": redis.url,
                "QA_SHUTDOWN_GRACE_SECONDS": str(GRACE),
                **extra,
            }
            for key in keys
        ]
        replicas = stack.enter_context(run_services(settings, workdir))
        backends = [replica.url.removeprefix("http://") for replica in replicas]
        nginx = stack.enter_context(run_nginx(backends, workdir))
        by_url = {replica.url: key for replica, key in zip(replicas, keys, strict=True)}
        yield Fleet(replicas[0], replicas[1], nginx, by_url)


def _start_answers(
    fleet: Fleet, stub: UpstreamStub, pool: ThreadPoolExecutor, progress: threading.Condition
) -> list[Client]:
    """20 answers through nginx, short and long mixed, each read by a resuming client;
    returns once every one is streaming (three texts in)."""
    clients = []
    for n in range(ANSWERS):
        query = marker()
        # Short and long in a pattern that round robin's alternation cannot
        # line up with: each replica gets some of both.
        pieces = [f"{query}:{k} " for k in range(SHORT if n % 4 < 2 else LONG)]
        stub.reply(query, Reply(pieces=pieces, piece_delay=PIECE_DELAY))
        read, hang_up = ResumedRead(), threading.Event()
        done = pool.submit(
            read_resuming,
            fleet.nginx.url,
            query,
            timeout=DEADLINE,
            hang_up=hang_up,
            progress=progress,
            into=read,
        )
        clients.append(Client(query, pieces, read, done, hang_up))
    with progress:
        streaming = progress.wait_for(
            lambda: all(c.read.texts() >= 3 or c.done.done() for c in clients), DEADLINE
        )
    assert streaming, [c.read.attempts for c in clients]
    return clients


def _assert_whole_and_exact(client: Client, stub: UpstreamStub) -> None:
    got = client.read
    assert "done" in got.last, (got.last, got.attempts)
    assert got.text == "".join(client.pieces)
    # Every event once, in order, across every connection it took.
    assert got.seqs == list(range(len(got.ids)))
    assert len(stub.exchanges_for(client.query)) == 1


def _unready(url: str) -> httpx.Response | None:
    """The /readyz response once it is a 503; None before (or if nothing answers)."""
    try:
        response = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.TransportError:
        return None
    return response if response.status_code == 503 else None


def test_sigterm_drains_a_replica_and_every_answer_completes_exactly(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    progress = threading.Condition()
    with _fleet(stub, tmp_path) as fleet, ThreadPoolExecutor(ANSWERS + 1) as pool:
        # Asked of the stopping replica itself, then read on the other one only.
        remote_query = marker()
        remote_pieces = [f"{remote_query}:{k} " for k in range(LONGEST)]
        stub.reply(remote_query, Reply(pieces=remote_pieces, piece_delay=PIECE_DELAY))
        remote_start = read(fleet.stopping.url, params={"query": remote_query}, texts=3)
        clients = _start_answers(fleet, stub, pool, progress)
        stopping_key = fleet.keys[fleet.stopping.url]
        on_stopping = [c for c in clients if c.producer_key(stub) == stopping_key]
        long_on_stopping = [c for c in on_stopping if len(c.pieces) == LONG]
        short_on_stopping = [c for c in on_stopping if len(c.pieces) == SHORT]
        # Round robin gave the stopping replica answers of both lengths.
        assert long_on_stopping, [len(c.pieces) for c in on_stopping]
        assert short_on_stopping, [len(c.pieces) for c in on_stopping]

        os.kill(fleet.stopping.process.pid, signal.SIGTERM)
        ready = wait_until(
            lambda: _unready(fleet.stopping.url), READYZ_WITHIN, "/readyz 503 when stopping"
        )
        assert ready is not None  # for mypy: wait_until returns only what holds
        turned_unready = time.monotonic()
        # Its long answers were all still being written then (7 s each).
        unfinished = [not stub.exchanges_for(c.query)[0].completed for c in long_on_stopping]
        assert ready.json()["error"]["code"] == "shutting_down"
        assert ready.json()["error"]["retryable"] is True
        # Liveness holds while it drains: a probe must not kill a draining pod.
        assert httpx.get(f"{fleet.stopping.url}/healthz", timeout=5).status_code == 200
        # A new answer that still reaches it is refused before any upstream call.
        refused_query = marker()
        refused = httpx.get(
            f"{fleet.stopping.url}/ai_write", params={"query": refused_query}, timeout=10
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "shutting_down"
        assert refused.headers["retry-after"] == "1"
        # A resume that reaches it is served: it costs no upstream call.
        path = f"/answers/{remote_start.answer_id}/events"
        resumed_here = read(fleet.stopping.url, path, last_event_id=remote_start.last_id, texts=1)
        remote_rest = pool.submit(
            read,
            fleet.staying.url,
            params={"query": remote_query},
            last_event_id=remote_start.last_id,
            timeout=DEADLINE,
        )

        # The long answers' clients drop and resume through nginx, on either
        # replica. The short ones read on, on the replica that writes them.
        for client in clients:
            if len(client.pieces) == LONG:
                client.hang_up.set()
        for client in clients:
            client.done.result(timeout=DEADLINE)
        remote = remote_rest.result(timeout=DEADLINE)
        code = fleet.stopping.process.wait(timeout=DEADLINE)

    assert all(unfinished), unfinished
    assert resumed_here.status == 200
    assert "text" in resumed_here.last
    # The stopping replica wrote on, holding no connection for it, to the end.
    assert "done" in remote.last, remote.last
    assert remote_start.text + remote.text == "".join(remote_pieces)
    assert seqs(remote_start.ids + remote.ids) == list(range(len(remote_start.ids + remote.ids)))
    assert len(stub.exchanges_for(remote_query)) == 1
    for client in clients:
        _assert_whole_and_exact(client, stub)
    assert stub.exchanges_for(refused_query) == []
    # Finished on the stopping replica, while it drained: one connection each,
    # and events still arrived on them after /readyz had turned 503.
    for client in short_on_stopping:
        assert len(client.read.attempts) == 1, client.read.attempts
    assert any(c.read.arrived[-1] > turned_unready for c in short_on_stopping)
    # Resumed (Last-Event-ID) wherever nginx sent them, during the drain.
    for client in long_on_stopping:
        assert len(client.read.attempts) >= 2, client.read.attempts
        assert client.read.arrived[-1] > turned_unready
    assert code == 0


def test_sigkill_leaves_the_answers_of_the_killed_replica_ending_in_producer_lost(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    progress = threading.Condition()
    with (
        _fleet(stub, tmp_path, QA_PRODUCER_LEASE_SECONDS="1") as fleet,
        ThreadPoolExecutor(ANSWERS) as pool,
    ):
        clients = _start_answers(fleet, stub, pool, progress)
        killed_key = fleet.keys[fleet.stopping.url]

        os.kill(fleet.stopping.process.pid, signal.SIGKILL)
        for client in clients:
            client.done.result(timeout=DEADLINE)
        assert fleet.stopping.process.wait(timeout=DEADLINE) == -signal.SIGKILL

    killed = [c for c in clients if c.producer_key(stub) == killed_key]
    assert killed
    assert len(killed) < ANSWERS
    for client in clients:
        if client not in killed:
            _assert_whole_and_exact(client, stub)
            continue
        got = client.read
        # docs/PROTOCOL.md, "Several instances": its connection dropped with
        # no last event; the resume (Last-Event-ID, through nginx, on the
        # other replica) replays what it missed, and once the lease lapses
        # the answer ends with a retryable producer_lost, in its log (an id).
        assert len(got.attempts) >= 2, got.attempts
        assert got.attempts[0].ended == "dropped", got.attempts
        assert got.last["error"]["code"] == "producer_lost", got.last
        assert got.last["error"]["retryable"] is True
        # What it has is a prefix of the answer, every event once, in order.
        assert "".join(client.pieces).startswith(got.text)
        assert got.seqs == list(range(len(got.ids)))
        # Never asked again: a new answer is the client's call.
        assert len(stub.exchanges_for(client.query)) == 1
