"""Producer ends benchmark: what ending answers at random moments leaves behind
in Redis (issue 20, items 1 and 5), as the review measured it.

    uv run --frozen python -m benchmarks.producer_ends [--hangups 300] [--cancels 60]
        [--lease 3.0] [--src DIR]

Processes on 127.0.0.1: the upstream stub (in this process), a redis-server,
and two replicas with QA_REDIS_URL and no resume grace (a hang-up ends the
answer at once), their producer lease `--lease` seconds; 1 and 2 run on the
first.

1. `--hangups` answers, 24 at a time: a third hung up on within 10 ms of
   the response's headers, the rest after a random number of text events
   (0-12). Once every lease has gone, or 15 s have passed:
   how many leases are left (a heartbeat still running renews its lease for
   ever) and how many keys have no TTL (never expire).
2. `--cancels` fast answers, 6 at a time, each cancelled (POST
   /answers/{id}/cancel) at a random moment within 0.3 s of its first text:
   how their readers saw them end (`cancelled`, or `producer_lost`).
3. One answer whose last event comes 0.3 s into a Redis stall of `--stall`
   seconds (SIGSTOP, SIGCONT), read on its replica, with
   QA_RESUME_TTL_SECONDS=30: how and when (after the stall) its reader
   ended, and how a reader on a second replica saw it after the stall.

`--src DIR` runs the service from another source tree (an exported older
`src/`, say `git archive main src | tar -x -C /tmp/main`), for a figure
before a change in the same conditions. Figures go to stdout and
benchmarks/results/producer_ends.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.producer_ends import (
    FAST,
    cancel_answers,
    hang_up_on_answers,
    leftovers,
    stall_at_the_end,
)
from tests.support.providers import provider_settings
from tests.support.redis_server import run_redis
from tests.support.service import run_services
from tests.support.upstream_stub import UpstreamStub

from benchmarks.measure import source_tree, write_results

RESULTS = Path(__file__).resolve().parent / "results"


def measure(
    hangups: int, cancels: int, lease: float, stall: float, src: Path | None
) -> dict[str, Any]:
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stub = UpstreamStub()
        stub.start()
        stack.callback(stub.stop)
        redis = stack.enter_context(run_redis(workdir))
        settings = {
            **provider_settings("openai", stub),
            "QA_REDIS_URL": redis.url,
            "QA_RESUME_GRACE_SECONDS": "0",
            "QA_PRODUCER_LEASE_SECONDS": str(lease),
            "QA_MAX_TOKENS": str(len(FAST)),
            "QA_RESUME_TTL_SECONDS": "30",
        }
        if src is not None:
            settings["PYTHONPATH"] = str(src)
        service, other = stack.enter_context(run_services([settings] * 2, workdir))

        hang_up_on_answers([service.url], stub, hangups)
        left = leftovers(redis, hangups)
        ends = Counter(cancel_answers([service.url], stub, cancels))
        stalled = stall_at_the_end(service.url, other.url, redis, stub, stall, timeout=60)
    return {
        "python": sys.version.split()[0],
        "src": str(src) if src is not None else "this tree",
        "lease_seconds": lease,
        "hangups": hangups,
        "heartbeats_left_running": len(left.leases),
        "keys_without_ttl": len(left.without_ttl),
        "cancels": cancels,
        "cancel_ends": dict(ends),
        "stall_seconds": stall,
        "stalled_end_here": stalled.here.last,
        "stalled_end_here_after_stall_seconds": round(stalled.here_after_stall, 2),
        "stalled_end_elsewhere": stalled.elsewhere.last,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hangups", type=int, default=300)
    parser.add_argument("--cancels", type=int, default=60)
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--stall", type=float, default=2.8)
    parser.add_argument(
        "--src", type=source_tree, default=None, help="run the service from this src/"
    )
    args = parser.parse_args()
    started_at = datetime.now(UTC)
    report = measure(args.hangups, args.cancels, args.lease, args.stall, args.src)
    report["started_at"] = started_at.isoformat()
    write_results(RESULTS, "producer_ends", started_at, report)
    for name, value in report.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
