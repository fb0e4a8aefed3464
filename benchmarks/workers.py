"""Throughput at saturation: QA_WORKERS=2 against 1, same run, same Redis.

    uv run --frozen python -m benchmarks.workers [--streams 200] [--tokens 200] [--rounds 2]

Both services use the Redis store (more than one worker requires it), on a
redis-server of their own. The single worker runs on core 0; the two workers
may use cores 0 and 1. The stub, redis-server and this load generator run on
core 1 in both cases: on a 2-core machine the second worker shares its core
with them, so the ratio here is a floor for what two free cores give (the
JSON records each process's CPU, so the sharing can be read off).

Load, closed loop: `--clients` clients, each asking for `--answers` answers
one after another (`--tokens` tokens, each piece `--piece-delay` s after the
last: more than one core serves), so the service stays saturated without an
unbounded queue (an open-loop burst far above capacity measures how the
overloaded loop collapses, not throughput). Throughput = upstream tokens of
complete answers / wall time. Every stream's text is checked against what
the stub sent.

Results: stdout, and JSON in benchmarks/results/workers-<timestamp>.json
(and workers.json, the latest), with load averages.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import psutil
import uvloop
from tests.support.redis_server import run_redis
from tests.support.service import run_service

from benchmarks.load import (
    LOAD_CORE,
    RESULTS,
    SERVICE_CORE,
    Ledger,
    Stream,
    Target,
    burst,
    git_commit,
    one_stream,
    pieces,
    run_stub,
    service_settings,
)
from benchmarks.measure import cpu_seconds, write_results

MARKER = "mk-saturate"


async def closed_loop(target: Target, clients: int, answers: int) -> list[Stream]:
    async def client() -> list[Stream]:
        return [await one_stream(target, "saturate", MARKER) for _ in range(answers)]

    return [
        s for streams in await asyncio.gather(*(client() for _ in range(clients))) for s in streams
    ]


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (a supervisor and its workers)."""
    process = psutil.Process(pid)
    return cpu_seconds(pid) + sum(cpu_seconds(child.pid) for child in process.children())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--answers", type=int, default=3, help="per client, one after another")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--piece-delay", type=float, default=0.005)
    parser.add_argument("--rounds", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started_at = datetime.now(UTC)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "work"
    workdir.mkdir(exist_ok=True)
    both = {SERVICE_CORE, LOAD_CORE}
    if not both <= os.sched_getaffinity(0):
        sys.exit(f"needs cores {sorted(both)}; this process may use {os.sched_getaffinity(0)}")
    spec = {
        MARKER: {"pieces": pieces(args.tokens), "first_delay": 0.0, "piece_delay": args.piece_delay}
    }
    ledger = Ledger({"saturate": "".join(spec[MARKER]["pieces"])})
    report: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "args": vars(args),
        "git": git_commit(),
        "machine": {"cpu_count": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
        "runs": {"1": [], "2": []},
    }
    with ExitStack() as stack:
        os.sched_setaffinity(0, {LOAD_CORE})  # the stub and redis-server inherit it
        stub_url, _ = stack.enter_context(run_stub(spec))
        redis = stack.enter_context(run_redis(workdir))
        services: dict[str, Target] = {}
        for workers, cores in (("1", {SERVICE_CORE}), ("2", both)):
            os.sched_setaffinity(0, cores)
            settings = {
                **service_settings(stub_url),
                "QA_WORKERS": workers,
                "QA_REDIS_URL": f"{redis.url.rsplit('/', 1)[0]}/{workers}",
            }
            running = stack.enter_context(run_service(settings, workdir))
            services[workers] = Target(
                f"{workers} worker(s)", running.url, running.process.pid, "service"
            )
        os.sched_setaffinity(0, {LOAD_CORE})

        async def run_all() -> None:
            for target in services.values():
                ledger.check(await burst(target, "warmup", MARKER, 8), "saturate")
            for _ in range(args.rounds):
                for workers, target in services.items():
                    cpu0, redis0 = tree_cpu_seconds(target.pid), cpu_seconds(redis.pid)
                    wall0 = time.perf_counter()
                    done = await closed_loop(target, args.clients, args.answers)
                    wall = time.perf_counter() - wall0
                    ledger.check(done, "saturate")
                    complete = sum(s.outcome == "done" for s in done)
                    report["runs"][workers].append(
                        {
                            "wall_s": wall,
                            "complete": complete,
                            "tokens_per_s": complete * args.tokens / wall,
                            "service_cpu_s": tree_cpu_seconds(target.pid) - cpu0,
                            "redis_cpu_s": cpu_seconds(redis.pid) - redis0,
                        }
                    )

        uvloop.run(run_all())
    one, two = (statistics.median(r["tokens_per_s"] for r in report["runs"][w]) for w in "12")
    report["tokens_per_s_median"] = {"1": one, "2": two}
    report["ratio_2_to_1"] = two / one
    report["mismatches"] = len(ledger.mismatches)
    report["first_mismatches"] = ledger.mismatches
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    write_results(RESULTS, "workers", started_at, report)
    print(
        f"\nQA_WORKERS throughput at saturation ({args.clients} clients x {args.answers} answers"
        f" of {args.tokens} tokens,"
        f" Redis store), load average {report['machine']['loadavg_start'][0]:.2f}:\n"
        f"  1 worker  {one:8.0f} tokens/s\n  2 workers {two:8.0f} tokens/s"
        f"  ({two / one:.2f}x; the second worker shares core {LOAD_CORE} with the stub,"
        " redis-server and load generator)\n"
        f"  exactness: {ledger.checked} streams, {len(ledger.mismatches)} mismatches\n"
        f"  written to {report['written_to']}"
    )
    if ledger.mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
