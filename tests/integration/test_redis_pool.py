"""The Redis store serves more concurrent streams than redis-py's default pool holds."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.providers import marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.service import run_service
from tests.support.sse import read_stream
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

# More than redis-py's default connection pool (100).
STREAMS = 130


def test_more_streams_than_redis_pys_default_pool_all_complete(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    """Each open stream's reader holds a Redis connection through its XREAD BLOCK:
    past redis-py's default pool of 100, streams ended with store_unavailable."""
    key = marker()
    pieces = [f"piece {n} " for n in range(8)]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.25))
    with run_redis(tmp_path) as redis:
        settings = {**provider_settings("openai", stub), "QA_REDIS_URL": redis.url}
        with run_service(settings, tmp_path) as service, ThreadPoolExecutor(STREAMS) as pool:
            reads = list(
                pool.map(
                    lambda _: read_stream(service.url, params={"query": key}, timeout=60),
                    range(STREAMS),
                )
            )

    outcomes = Counter(next(iter(r.last)) for r in reads)
    assert outcomes == {"done": STREAMS}
    assert all(r.text == "".join(pieces) for r in reads)
