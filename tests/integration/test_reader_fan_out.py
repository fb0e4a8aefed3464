"""200 readers of one answer on a replica that does not write it share that
replica's reads of Redis (issue 21, part 3): its connections stay at a handful
(the bar: 20), where one XREAD BLOCK per reader took one each, and every
reader gets the whole answer, exact.

Redis names each connection after its process (stores/redis_client.py), so
CLIENT LIST says which are the reading replica's.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from tests.support.providers import marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.resume import AnswerIdWatch, attach_readers, read
from tests.support.service import run_services
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

READERS = 200
MOST_CONNECTIONS = 20


def _connections_of(client: redis.Redis, pid: int) -> int:
    return sum(1 for c in client.client_list() if c.get("name", "").endswith(f":{pid}"))


def test_two_hundred_readers_of_one_answer_elsewhere_hold_a_handful_of_connections(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    key = marker()
    # Slow enough that every reader attaches while it is written, on a busy machine.
    pieces = [f"piece {n} " for n in range(20)]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.75))

    with run_redis(tmp_path) as redis_server:
        settings = {
            **provider_settings("openai", stub),
            "QA_REDIS_URL": redis_server.url,
            "QA_MAX_READERS_PER_ANSWER": str(READERS + 10),
            "QA_CLIENT_MAX_READERS": str(READERS + 10),
            "QA_PRODUCER_LEASE_SECONDS": "10",
        }
        with (
            run_services([settings, settings], tmp_path) as (a, b),
            ThreadPoolExecutor(READERS + 1) as pool,
        ):
            started = AnswerIdWatch()
            on_a = pool.submit(read, a.url, params={"query": key}, on_event=started, timeout=120)
            answer_id = started.wait(timeout=30)
            readers = attach_readers(pool, b.url, answer_id, READERS)
            with redis_server.client() as probe:
                connections = _connections_of(probe, b.process.pid)
                assert _connections_of(probe, a.process.pid) > 0, probe.client_list()
            reader_reads = [r.result() for r in readers]
            first = on_a.result()

    whole = "".join(pieces)
    assert first.text == whole
    assert [r.text for r in reader_reads if r.text != whole] == []
    assert all(r.ids == first.ids for r in reader_reads)
    print(f"{READERS} readers of one answer on B: {connections} Redis connections of B's")
    assert connections <= MOST_CONNECTIONS
