"""Readers of one answer on a replica that does not write it cannot starve that
replica's new answers (issue 20, item 2).

Reading an answer needs no key. Each reader on a replica that does not write
its answer held a Redis connection of its own through each XREAD BLOCK, from
the pool the producers use: the review saw 80 readers of one answer on replica
B (with QA_MAX_STREAMS=32, a pool of 80) refuse 10 of 10 new answers on B with
503 store_unavailable. This test, on ce7baec: 0 to 4 of 10 refused, 3 to 7 of
the 80 readers cut short, 73 to 77 Redis connections in XREAD. Now B reads
that answer from Redis once for all 80 (stores/followed.py), on a pool of its
own: 0 of 10 refused, 0 of 80 cut, 1 connection in XREAD.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from tests.support.providers import marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.resume import AnswerIdWatch, Read, attach_readers, read
from tests.support.service import run_services
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

READERS = 80
OTHER_ANSWERS = 10


def _xread_clients(client: redis.Redis) -> int:
    """Redis connections whose last command was XREAD."""
    return sum(1 for c in client.client_list() if c.get("cmd") == "xread")


def test_readers_of_one_answer_on_another_replica_leave_its_new_answers_room(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    long_key, short_key = marker(), marker()
    # Slow, as a model that thinks between pieces: its readers wait in XREAD
    # BLOCK most of the time. Long enough to outlast every start below on a
    # busy machine; every reader reads it to its end.
    pieces = [f"piece {n} " for n in range(16)]
    stub.reply(long_key, Reply(pieces=pieces, piece_delay=2.0))
    stub.reply(short_key, Reply(pieces=["short ", "answer"]))

    with run_redis(tmp_path) as redis:
        settings = {
            **provider_settings("openai", stub),
            "QA_REDIS_URL": redis.url,
            # The review's set-up: a Redis pool of 2 x 32 + 16 = 80 connections.
            "QA_MAX_STREAMS": "32",
            # Every one of the 80 readers is let in: this test is about what they cost.
            "QA_MAX_READERS_PER_ANSWER": str(READERS + 10),
            "QA_CLIENT_MAX_READERS": str(READERS + 10),
            "QA_PRODUCER_LEASE_SECONDS": "10",
        }
        with (
            run_services([settings, settings], tmp_path) as (a, b),
            ThreadPoolExecutor(READERS + OTHER_ANSWERS + 1) as pool,
        ):
            started = AnswerIdWatch()
            on_a = pool.submit(
                read, a.url, params={"query": long_key}, on_event=started, timeout=120
            )
            answer_id = started.wait(timeout=30)
            # Each has attached and reads the answer (or, on ce7baec, was refused).
            readers = attach_readers(pool, b.url, answer_id, READERS)
            with redis.client() as probe:
                xread_clients = _xread_clients(probe)
            others = [
                pool.submit(read, b.url, params={"query": short_key}, timeout=60)
                for _ in range(OTHER_ANSWERS)
            ]
            other_reads: list[Read] = [o.result() for o in others]
            reader_reads = [r.result() for r in readers]
            first = on_a.result()

    refused = [(r.status, r.body[:200]) for r in other_reads if r.status != 200]
    cut = [r.events[-1:] for r in reader_reads if not r.events or "done" not in r.last]
    print(
        f"{len(refused)} of {OTHER_ANSWERS} new answers refused; {len(cut)} of {READERS} "
        f"readers did not end with done; {xread_clients} Redis clients last ran XREAD"
    )
    assert refused == []
    assert all(r.last.get("done") for r in other_reads)
    whole = "".join(pieces)
    assert first.text == whole
    broken = [(r.status, r.events[-1:]) for r in reader_reads if r.text != whole]
    assert broken == []
    # One XREAD per answer on B (and none for the producing replica A's own readers).
    assert xread_clients <= 2
