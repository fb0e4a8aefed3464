"""A Redis failover mid-answer costs nothing (issue 21, part 2).

Two service processes on a Sentinel set, or on a six-node cluster; answers
streaming from A, each followed live by a reader on B; then the primary that
holds them is killed (SIGKILL by PID) and a replica promoted. Every answer
completes, exact, with no error event and one upstream call: A holds each
answer whole and writes it again to the new primary from where that one's
copy ends (stores/write_behind.py). Readers on B, and resumes that arrive on B
while the primary is down, wait and read on with no gap or repeat.

The lease is 1 s here, well under a failover: a lease lost or lapsed with the
old primary must not make B declare a live producer lost.
(An empty restart, the third way to lose Redis: test_resume.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.providers import marker, provider_settings
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import (
    RedisCluster,
    SentinelSet,
    run_redis_cluster,
    run_sentinel_set,
)
from tests.support.resume import AnswerIdWatch, EventWatch, Read, read, seqs
from tests.support.service import run_services
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

ANSWERS = 4
PIECES = [f"f{n} " for n in range(300)]  # 6 s at 20 ms a piece: outlasts the failover
READ_SECONDS = 120.0


@contextmanager
def _topology(name: str, workdir: Path) -> Iterator[SentinelSet | RedisCluster]:
    if name == "sentinel":
        with run_sentinel_set(workdir) as sentinel_set:
            yield sentinel_set
    else:
        with run_redis_cluster(workdir) as cluster:
            yield cluster


def _kill_primary(topology: SentinelSet | RedisCluster, answer_id: str) -> RedisServer:
    """SIGKILL the primary holding the answer's keys."""
    if isinstance(topology, SentinelSet):
        return topology.kill_primary()
    return topology.kill_primary_for(f"qa:answer:{{{answer_id}}}")


def _wait_for_failover(
    topology: SentinelSet | RedisCluster, answer_id: str, old: RedisServer
) -> None:
    if isinstance(topology, SentinelSet):
        topology.wait_for_new_primary(old, timeout=60)
    else:
        topology.wait_for_slot_owner_change(f"qa:answer:{{{answer_id}}}", old, timeout=60)


def _longest_pause(got: Read) -> float:
    gaps = [later - earlier for earlier, later in zip(got.arrived, got.arrived[1:], strict=False)]
    return max(gaps, default=0.0)


@pytest.mark.parametrize("topology_name", ["sentinel", "cluster"])
def test_a_failover_mid_answer_loses_no_answer_for_any_reader(
    topology_name: str, stub: UpstreamStub, tmp_path: Path
) -> None:
    keys = [marker() for _ in range(ANSWERS)]
    for key in keys:
        stub.reply(key, Reply(pieces=PIECES, piece_delay=0.02))
    with _topology(topology_name, tmp_path) as topology:
        settings = {
            **provider_settings("openai", stub),
            "QA_REDIS_URL": topology.url,
            "QA_PRODUCER_LEASE_SECONDS": "1",
        }
        with (
            run_services([settings, settings], tmp_path) as (a, b),
            ThreadPoolExecutor(3 * ANSWERS) as pool,
        ):
            watches = [AnswerIdWatch() for _ in keys]
            on_a = [
                pool.submit(
                    read, a.url, params={"query": key}, on_event=watch, timeout=READ_SECONDS
                )
                for key, watch in zip(keys, watches, strict=True)
            ]
            answer_ids = [watch.wait(timeout=30) for watch in watches]
            # A client of each answer that read a few pieces on A and hung up:
            # it resumes on B while the primary is down.
            firsts = [
                read(a.url, f"/answers/{answer_id}/events", texts=3) for answer_id in answer_ids
            ]
            following = [EventWatch() for _ in answer_ids]
            on_b = [
                pool.submit(
                    read,
                    b.url,
                    f"/answers/{answer_id}/events",
                    on_event=watch,
                    timeout=READ_SECONDS,
                )
                for answer_id, watch in zip(answer_ids, following, strict=True)
            ]
            for watch in following:
                watch.wait()  # every reader on B follows live

            old = _kill_primary(topology, answer_ids[0])
            resumes: list[Future[Read]] = [
                pool.submit(
                    read,
                    b.url,
                    f"/answers/{answer_id}/events",
                    last_event_id=first.last_id,
                    timeout=READ_SECONDS,
                )
                for answer_id, first in zip(answer_ids, firsts, strict=True)
            ]
            _wait_for_failover(topology, answer_ids[0], old)
            reads_a = [f.result() for f in on_a]
            reads_b = [f.result() for f in on_b]
            rests = [f.result() for f in resumes]

    whole = "".join(PIECES)
    for got in [*reads_a, *reads_b]:
        assert "done" in got.last, got.last
        assert got.text == whole
        assert seqs(got.ids) == list(range(len(got.ids)))
    for first, rest, got in zip(firsts, rests, reads_a, strict=True):
        assert "done" in rest.last, rest.last
        assert first.ids + rest.ids == got.ids  # no gap, no repeat
    for key in keys:
        assert len(stub.exchanges_for(key)) == 1
    pauses = [_longest_pause(got) for got in reads_b]
    print(f"{topology_name}: the longest pause of a reader on B: {max(pauses):.2f} s")
