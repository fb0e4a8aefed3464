"""A replica follows more answers from Redis at once than redis-py's default pool holds.

A reader on the replica that generates its answer reads that replica's memory
(stores/write_behind.py). A reader elsewhere, a client that resumed on another
replica, holds a Redis connection through each XREAD BLOCK: past redis-py's
default pool of 100, such streams ended with store_unavailable
(MaxConnectionsError; benchmarks/workers.py at 200 streams).

On a machine far busier than its cores (8 CPU hogs on 2), one Redis round trip
at an answer's start can take longer than the store's deadline (3 s, counted
on the service's own busy event loop), and the new answer is refused before
its stream: 503 store_unavailable, retryable. That refusal is the product's
answer to a store it cannot use in time, so it is allowed here, once per
deadline the replica logged; a stream that started must end whole, and no
replica may run out of pool connections.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.providers import marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.resume import Read, read
from tests.support.service import RunningService, run_services
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

# More than redis-py's default connection pool (100).
STREAMS = 130


def _logged(service: RunningService, message: str) -> list[str]:
    """The request ids of the log records with this message."""
    records = service.log_records()
    return [str(r.get("request_id")) for r in records if r["message"] == message]


def test_more_streams_resumed_on_another_replica_than_redis_pys_default_pool_all_complete(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    key = marker()
    pieces = [f"piece {n} " for n in range(8)]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.25))

    def start_here_finish_there(a: RunningService, b: RunningService) -> tuple[Read, Read | None]:
        first = read(a.url, params={"query": key}, texts=1, timeout=60)
        if first.status != 200:
            return first, None
        # The answer goes on on A (the resume grace); B reads the rest from Redis.
        return first, read(b.url, params={"query": key}, last_event_id=first.last_id, timeout=60)

    with run_redis(tmp_path) as redis:
        settings = {
            **provider_settings("openai", stub),
            "QA_REDIS_URL": redis.url,
            # A producer's lease is not what this test is about: long enough
            # that a burst of 130 starts on a busy machine cannot outlast it.
            "QA_PRODUCER_LEASE_SECONDS": "10",
            # Nor is the resume grace: B's first presence touch, behind 130
            # resumes on a busy machine, came more than the default 5 s after
            # A's reader left (13 of 130 answers cancelled on a CI run).
            "QA_RESUME_GRACE_SECONDS": "30",
        }
        with run_services([settings, settings], tmp_path) as (a, b):
            with ThreadPoolExecutor(STREAMS) as pool:
                reads = list(pool.map(lambda _: start_here_finish_there(a, b), range(STREAMS)))
            past_deadline = _logged(a, "redis error TimeoutError")
            exhausted = [_logged(r, "redis error MaxConnectionsError") for r in (a, b)]

    refused = [first for first, rest in reads if rest is None]
    finished = [(first, rest) for first, rest in reads if rest is not None]
    assert exhausted == [[], []]
    assert {(r.status, r.error()["code"]) for r in refused} <= {(503, "store_unavailable")}
    # Each refusal came from a command past its deadline, in that very request.
    assert {r.headers["x-request-id"] for r in refused} <= set(past_deadline)
    assert Counter(rest.status for _, rest in finished) == {200: len(finished)}
    broken = [
        (first.ids, rest.ids, rest.events[-1:])
        for first, rest in finished
        if "done" not in rest.last or first.text + rest.text != "".join(pieces)
    ]
    assert broken == []
