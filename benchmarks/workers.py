"""Throughput at saturation: QA_WORKERS=2 against 1, same run, same Redis.

    uv run --frozen python -m benchmarks.workers [--clients 100] [--answers 3] [--rounds 3]

Both services use the Redis store (more than one worker requires it), on a
redis-server of their own. The single worker runs on core 0; the two workers
may use cores 0 and 1. The stub, redis-server and this load generator run on
core 1 in both cases.

On a 2-core machine the load side cannot be taken off the service's cores:
the second worker shares core 1 with the stub, redis-server and the load
generator, so the measured ratio is a floor. The run therefore also gives
the scaling on paper, from per-core figures: each configuration's tokens per
CPU-second of the service (its efficiency; a second worker's overhead, Redis
contention included, shows as a lower figure), and
    2 x (tokens per service CPU-s, 2 workers) / (the same, 1 worker),
what two workers would deliver with a free core each, if one worker
saturates one core (its core's share is reported: near 100% it does). That
is an estimate from measured figures, not a measurement, and says so.

Load, closed loop: `--clients` clients, each asking for `--answers` answers
one after another (`--tokens` tokens, each piece `--piece-delay` s after the
last: more than one core serves), so the service stays saturated without an
unbounded queue (an open-loop burst far above capacity measures how the
overloaded loop collapses, not throughput). Throughput = upstream tokens of
complete answers / wall time. Every stream's text is checked against what
the stub sent. Rounds interleave the two services.

Results: stdout, and JSON in benchmarks/results/workers-<timestamp>.json
(and workers.json, the latest), with load averages, the foreign busy share
of the cores, the Python version and the git commit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
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
    core_busy_seconds,
    git_commit,
    one_stream,
    own_cpu,
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
    parser.add_argument("--rounds", type=int, default=3)
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
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": list(os.getloadavg()),
        },
        "runs": {"1": [], "2": []},
    }
    with ExitStack() as stack:
        os.sched_setaffinity(0, {LOAD_CORE})  # the stub and redis-server inherit it
        stub_url, stub_pid = stack.enter_context(run_stub(spec))
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
                    load0, cores0 = cpu_seconds(stub_pid) + own_cpu(), core_busy_seconds()
                    wall0 = time.perf_counter()
                    done = await closed_loop(target, args.clients, args.answers)
                    wall = time.perf_counter() - wall0
                    ledger.check(done, "saturate")
                    complete = sum(s.outcome == "done" for s in done)
                    service_cpu = tree_cpu_seconds(target.pid) - cpu0
                    redis_cpu = cpu_seconds(redis.pid) - redis0
                    load_cpu = cpu_seconds(stub_pid) + own_cpu() - load0
                    busy = sum(core_busy_seconds()) - sum(cores0)
                    report["runs"][workers].append(
                        {
                            "wall_s": wall,
                            "complete": complete,
                            "tokens_per_s": complete * args.tokens / wall,
                            "service_cpu_s": service_cpu,
                            "service_cores": service_cpu / wall,
                            "tokens_per_service_cpu_s": complete * args.tokens / service_cpu,
                            "redis_cpu_s": redis_cpu,
                            "stub_and_generator_cpu_s": load_cpu,
                            # Other jobs on the machine, as a share of both cores.
                            "foreign_busy": max(0.0, busy - service_cpu - redis_cpu - load_cpu)
                            / wall
                            / 2,
                        }
                    )

        uvloop.run(run_all())

    def median(workers: str, key: str) -> float:
        return statistics.median(r[key] for r in report["runs"][workers])

    one, two = median("1", "tokens_per_s"), median("2", "tokens_per_s")
    efficiency = median("2", "tokens_per_service_cpu_s") / median("1", "tokens_per_service_cpu_s")
    report["tokens_per_s_median"] = {"1": one, "2": two}
    report["ratio_2_to_1"] = two / one
    report["ratio_2_to_1_spread"] = [
        min(r["tokens_per_s"] for r in report["runs"]["2"]) / one,
        max(r["tokens_per_s"] for r in report["runs"]["2"]) / one,
    ]
    report["efficiency_2_to_1"] = efficiency
    report["on_paper_2_free_cores"] = 2 * efficiency
    report["mismatches"] = len(ledger.mismatches)
    report["first_mismatches"] = ledger.mismatches
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    write_results(RESULTS, "workers", started_at, report)
    print(
        f"\nQA_WORKERS throughput at saturation ({args.clients} clients x {args.answers} answers"
        f" of {args.tokens} tokens, Redis store, {args.rounds} rounds, medians),"
        f" load average {report['machine']['loadavg_start'][0]:.2f}:\n"
        f"  1 worker  {one:8.0f} tokens/s on {median('1', 'service_cores'):.2f} cores,"
        f" {median('1', 'tokens_per_service_cpu_s'):.0f} tokens per service CPU-s\n"
        f"  2 workers {two:8.0f} tokens/s on {median('2', 'service_cores'):.2f} cores,"
        f" {median('2', 'tokens_per_service_cpu_s'):.0f} tokens per service CPU-s\n"
        f"  measured: {two / one:.2f}x (the second worker shares core {LOAD_CORE} with the stub,"
        f" redis-server and load generator: {median('2', 'stub_and_generator_cpu_s'):.1f} +"
        f" {median('2', 'redis_cpu_s'):.1f} CPU-s of theirs per run)\n"
        f"  on paper, two free cores: 2 x {efficiency:.2f} = {2 * efficiency:.2f}x"
        " (an estimate from per-core figures, not a measurement)\n"
        f"  other jobs: {max(r['foreign_busy'] for rs in report['runs'].values() for r in rs):.0%}"
        " of both cores at most\n"
        f"  exactness: {ledger.checked} streams, {len(ledger.mismatches)} mismatches\n"
        f"  written to {report['written_to']}"
    )
    if ledger.mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
