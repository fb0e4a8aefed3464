"""Two minutes of mixed traffic on two replicas over Redis leave nothing growing.

benchmarks/soak.py, short: complete answers, hang-ups at random points,
explicit cancels, resumes on either replica, refusals and slow readers, with
every replica's RSS, fds, asyncio tasks and connections to Redis and to the
provider sampled every few seconds, and Redis' keys and memory. Its bounds are
about growth, never speed: a busy machine serves fewer answers, and each bound
is read against what that traffic itself explains (live answers, answers still
inside QA_RESUME_TTL_SECONDS). The 30-minute run is in ./benchmarks/run.sh.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.soak import Plan, report_text, run
from benchmarks.soak_traffic import KINDS

# Slow, but beside the others: its load is a few streams at a time, and its
# bounds are about growth, so a busy machine makes it serve less, not fail.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.beside_others,
    pytest.mark.replicas,
    pytest.mark.timeout(600),
]

SHORT_SOAK = Plan(
    minutes=2, sample_seconds=5, warmup_seconds=40, ttl_seconds=10, grace_seconds=2, workers=6
)


def test_two_minutes_of_mixed_traffic_leave_nothing_growing_and_redis_empty(
    tmp_path: Path,
) -> None:
    result = run(SHORT_SOAK, tmp_path)

    assert result["verdict"]["grew"] == [], report_text(result)
    assert result["redis_after_ttl"]["keys_left"] == 0
    # Every kind of exchange happened, so every path had its chance to leak.
    assert set(result["traffic"]["exchanges"]) == set(KINDS), result["traffic"]
