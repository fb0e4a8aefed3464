"""Redis log benchmark: what the Redis store costs per token (issue 21, part 3), in one run.

    uv run --frozen python -m benchmarks.redis_log [--src [LABEL=]DIR ...] [--rounds 5] ...
    (./benchmarks/run.sh runs it with the defaults, about 2 minutes for one tree)

For each source tree (`--src`, repeatable: an exported `src/`, say
`git archive 76ad2af src | tar -x -C /tmp/before`; without it, this
worktree's `src/`), processes on 127.0.0.1: its own redis-server, replicas A
and B on it (QA_REDIS_URL), and M with the in-process store. One upstream
stub (benchmarks/load_stub.py) serves them all. Services on core 0; the stub,
every redis-server and this load generator on core 1 (as in benchmarks/load.py;
when pinning is impossible the output and the JSON say so). Reader bounds are
off (QA_MAX_READERS_PER_ANSWER=0, QA_CLIENT_MAX_READERS=0), so that (c) is not
refused.

(a) Redis cost: `--answers` concurrent answers of `--pieces` pieces,
    `--piece-delay` apart, each read to its end by one client on A (the
    producer). INFO commandstats and INFO stats around each round; the readings'
    own traffic (measured by a reading right after one) subtracted. Commands per
    provider piece (issue 21's bar) and per event stored: a service short of CPU
    reads pieces ahead and stores several as one event, so per piece falls as
    the machine gets busier, and per event does not. Bytes in and out per token
    (one piece is one token here); Redis's used_memory_dataset added per token
    (answers stay for QA_RESUME_TTL_SECONDS).
(b) Service CPU (utime + stime from /proc, psutil) per 1,000 tokens: the same
    load on A (Redis) and on M (in-process), `--rounds` rounds each, the two
    stores and the trees alternating in order; the ratio Redis / in-process of
    each round, reported as median and range. redis-server's CPU is beside it.
(c) Connections: one answer of `--fanout-pieces` slow pieces started on A, and
    `--readers` readers of it by id (`/answers/{id}/events`) on B. While all are
    attached and the answer is live: B's established connections to Redis
    (psutil), how many of them ran a command within the last second (CLIENT
    LIST), B's connections by the name it gives them (`qa-service:<host>:<pid>`,
    CLIENT LIST; 0 for a tree that names none), and INFO clients
    connected_clients less the benchmark's own; whether every reader got the
    whole answer, exact (benchmarks/fanout.py).
(d) Memory per open stream: `--hold-streams` streams held open on A and on M
    (benchmarks/load.py's hold: VmRSS before, and with the most open at once).

`--setting QA_NAME=VALUE` gives every service a setting (say
QA_REDIS_BATCH_MS=500); `--profile` records py-spy on A and M through (b)'s
rounds and reports what A spends above M (benchmarks/redis_log_profile.py).

Exactness: every stream's text must equal what the stub sent, ending with
`done`; the run exits 1 otherwise. Results: a table on stdout, JSON in
benchmarks/results/redis_log-<timestamp>.json and redis_log.json (the latest).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from tests.support.redis_server import RedisServer, RedisTraffic, run_redis
from tests.support.service import REPO, run_services

from benchmarks.fanout import fan_out
from benchmarks.load import (
    LOAD_CORE,
    MARKERS,
    RESULTS,
    SERVICE_CORE,
    Ledger,
    Pinning,
    Target,
    burst,
    core_busy_seconds,
    git_commit,
    hold_one,
    own_cpu,
    pieces,
    pin_load_generator,
    record_affinity,
    run_stub,
    service_settings,
    spawned_on,
)
from benchmarks.measure import cpu_seconds, write_results
from benchmarks.redis_log_profile import compare, recording
from benchmarks.redis_log_report import report_text, summarise_rounds, warnings

LOG_MARKER, FANOUT_MARKER = "mk-log", "mk-fanout"


@dataclass(frozen=True)
class Tree:
    label: str
    src: Path


@dataclass
class Deployment:
    """One source tree's processes."""

    tree: Tree
    redis: RedisServer
    producer: Target  # A: Redis store; the load's clients attach here
    follower: Target  # B: Redis store; (c)'s readers attach here
    memory: Target  # M: the in-process store, the baseline


def parse_tree(value: str) -> Tree:
    label, _, directory = value.rpartition("=")
    src = Path(directory).resolve()
    if not (src / "qa_service" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{src} holds no qa_service package")
    return Tree(label or src.parent.name, src)


def parse_setting(value: str) -> tuple[str, str]:
    name, sep, setting = value.partition("=")
    if not sep or not name.startswith("QA_"):
        raise argparse.ArgumentTypeError(f"{value!r} is not QA_NAME=VALUE")
    return name, setting


def settings(
    stub_url: str, tree: Tree, redis_url: str | None, extra: dict[str, str]
) -> dict[str, str]:
    values = {
        **service_settings(stub_url),
        **extra,
        "PYTHONPATH": str(tree.src),  # ahead of the editable install of this worktree
        "QA_MAX_READERS_PER_ANSWER": "0",
        "QA_CLIENT_MAX_READERS": "0",
    }
    if redis_url is not None:
        values["QA_REDIS_URL"] = redis_url
    return values


@contextmanager
def deployed(
    tree: Tree, stub_url: str, workdir: Path, pinning: Pinning, extra: dict[str, str]
) -> Iterator[Deployment]:
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(workdir))  # on LOAD_CORE, as this process is
        pinning.affinity[f"redis {tree.label}"] = sorted(os.sched_getaffinity(redis.pid))
        with spawned_on(SERVICE_CORE, pinning):
            a, b, m = stack.enter_context(
                run_services(
                    [
                        settings(stub_url, tree, redis.url, extra),
                        settings(stub_url, tree, redis.url, extra),
                        settings(stub_url, tree, None, extra),
                    ],
                    workdir,
                )
            )
        targets = [
            Target(f"{tree.label} {name}", service.url, service.process.pid, "service")
            for name, service in (("A", a), ("B", b), ("M", m))
        ]
        for target in targets:
            record_affinity(target.name, target.pid, pinning)
        yield Deployment(tree, redis, *targets)


def used_memory(redis: RedisServer) -> int:
    """Redis's memory for its data: used_memory less its overhead, of which
    clients' buffers, which come and go with connections, are part."""
    with redis.client() as client:
        return int(client.info("memory")["used_memory_dataset"])


def minus_readings(redis: RedisServer, before: RedisTraffic) -> RedisTraffic:
    """Traffic since `before`, less what one reading adds (measured right after)."""
    after = redis.command_stats()
    return (after - before) - (redis.command_stats() - after)


async def log_round(
    deployment: Deployment, store: str, args: argparse.Namespace, ledger: Ledger, stub_pid: int
) -> dict[str, Any]:
    """(a) and (b): one round of `args.answers` concurrent answers on one store."""
    target = deployment.producer if store == "redis" else deployment.memory
    redis = deployment.redis
    await asyncio.sleep(args.settle)
    memory0, traffic0 = used_memory(redis), redis.command_stats()
    cpu0, redis_cpu0, stub0, own0 = (
        cpu_seconds(target.pid),
        cpu_seconds(redis.pid),
        cpu_seconds(stub_pid),
        own_cpu(),
    )
    cores0, wall0 = core_busy_seconds(), time.perf_counter()
    done = await burst(target, f"b_{store}", LOG_MARKER, args.answers)
    # The producers' last writes (lease released) come after the readers' `done`.
    await asyncio.sleep(args.settle)
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(target.pid) - cpu0
    redis_cpu = cpu_seconds(redis.pid) - redis_cpu0
    load_core = cpu_seconds(stub_pid) - stub0 + own_cpu() - own0 + redis_cpu
    cores = [b - a for a, b in zip(cores0, core_busy_seconds(), strict=True)]
    traffic = minus_readings(redis, traffic0)
    memory = used_memory(redis) - memory0
    ledger.check(done, "log")
    tokens = sum(s.outcome == "done" for s in done) * args.pieces
    ours = {SERVICE_CORE: cpu, LOAD_CORE: load_core}
    return {
        "store": store,
        "tokens": tokens,
        "text_events_per_answer": statistics.median(s.pieces for s in done),
        # Each answer's log holds its text events, a meta and a done: its appends.
        "events_stored": sum(s.pieces + 2 for s in done if s.outcome == "done"),
        "wall_s": wall,
        "service_cpu_s": cpu,
        "redis_server_cpu_s": redis_cpu,
        "redis_calls": traffic.calls,
        "redis_total_calls": traffic.total_calls,
        "redis_input_bytes": traffic.input_bytes,
        "redis_output_bytes": traffic.output_bytes,
        "redis_used_memory_added_bytes": memory,
        "load_core_busy": load_core / wall,
        # Core time of processes outside this benchmark (other jobs), per wall second.
        "foreign_busy": {
            f"core{core}": max(0.0, cores[core] - ours[core]) / wall
            for core in (SERVICE_CORE, LOAD_CORE)
            if core < len(cores)
        },
    }


async def run_all(
    deployments: list[Deployment], args: argparse.Namespace, ledger: Ledger, stub_pid: int
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {d.tree.label: {"rounds": []} for d in deployments}
    # (d) first, while the processes are fresh, as benchmarks/load.py does.
    for deployment in deployments:
        results[deployment.tree.label]["d_memory_per_stream"] = {
            "streams": args.hold_streams,
            "hold_seconds": args.hold_seconds,
            "redis": await hold_one(deployment.producer, ledger, args.hold_streams),
            "memory": await hold_one(deployment.memory, ledger, args.hold_streams),
        }
    for deployment in deployments:
        results[deployment.tree.label]["c_fanout"] = await fan_out(
            deployment.producer,
            deployment.follower,
            deployment.redis,
            ledger,
            FANOUT_MARKER,
            "fanout",
            args.readers,
        )
    runs = [(d, store) for d in deployments for store in ("redis", "memory")]
    for deployment, store in runs:  # warm-up: pools filled, scripts loaded
        target = deployment.producer if store == "redis" else deployment.memory
        ledger.check(await burst(target, "b_warmup", LOG_MARKER, 4), "log")
    with ExitStack() as profiling:
        for deployment in deployments if args.profile else []:
            label = deployment.tree.label
            results[label]["profile_files"] = profiling.enter_context(
                recording(
                    {"redis": deployment.producer, "memory": deployment.memory},
                    args.raw_prefix.with_name(f"{args.raw_prefix.name}-{label.replace(' ', '_')}"),
                )
            )
        await asyncio.sleep(1.0 if args.profile else 0.0)  # py-spy attaches
        for n in range(args.rounds):
            # Alternate the order, so drift over the run hits every store and tree alike.
            for deployment, store in runs if n % 2 == 0 else reversed(runs):
                result = await log_round(deployment, store, args, ledger, stub_pid)
                results[deployment.tree.label]["rounds"].append({"round": n, **result})
    for tree in results.values():
        if "profile_files" in tree:
            tokens = {
                store: sum(r["tokens"] for r in tree["rounds"] if r["store"] == store)
                for store in ("redis", "memory")
            }
            tree["profile"] = compare(tree.pop("profile_files"), tokens)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--src",
        type=parse_tree,
        action="append",
        help="[LABEL=]DIR: run the qa_service package in DIR (a src/ directory);"
        " repeat to compare trees in one run (default: this worktree's src/)",
    )
    parser.add_argument(
        "--setting",
        type=parse_setting,
        action="append",
        default=[],
        help="NAME=VALUE: a setting for every service of every tree (say QA_REDIS_BATCH_MS=250)",
    )
    parser.add_argument("--answers", type=int, default=20, help="(a, b) concurrent answers")
    parser.add_argument("--pieces", type=int, default=200, help="(a, b) pieces per answer")
    parser.add_argument("--piece-delay", type=float, default=0.02, help="(a, b) stub's pace, s")
    parser.add_argument("--rounds", type=int, default=5, help="(a, b) rounds per store and tree")
    parser.add_argument("--settle", type=float, default=0.5, help="quiet seconds around a round")
    parser.add_argument("--readers", type=int, default=200, help="(c) readers of one answer")
    parser.add_argument("--fanout-pieces", type=int, default=400, help="(c) the answer's pieces")
    parser.add_argument("--fanout-piece-delay", type=float, default=0.025, help="(c) its pace, s")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="(b) py-spy on A and M through the rounds: where Redis's extra CPU goes"
        " (it runs on the load core: take the bar's ratios from a run without it)",
    )
    parser.add_argument("--hold-streams", type=int, default=200, help="(d) streams held open")
    parser.add_argument("--hold-seconds", type=float, default=6.0, help="(d) each one's length")
    args = parser.parse_args(argv)
    args.src = args.src or [Tree("this tree", REPO / "src")]
    if len({tree.label for tree in args.src}) != len(args.src):
        parser.error("give each --src its own LABEL=")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started_wall, started_at = time.perf_counter(), datetime.now(UTC)
    args.raw_prefix = RESULTS / f"redis_log-{started_at:%Y%m%dT%H%M%SZ}"
    report: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "args": {k: str(v) if k in ("src", "raw_prefix") else v for k, v in vars(args).items()},
        "settings": dict(args.setting),
        "git": git_commit(),
        "trees": {tree.label: str(tree.src) for tree in args.src},
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": list(os.getloadavg()),
        },
    }
    # 200 held streams and 200 readers are hundreds of sockets: lift the soft limit.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pinning = pin_load_generator(
        f"services on core {SERVICE_CORE}; stub, redis, load on {LOAD_CORE}"
    )
    spec = {
        LOG_MARKER: {
            "pieces": pieces(args.pieces),
            "first_delay": 0.0,
            "piece_delay": args.piece_delay,
        },
        FANOUT_MARKER: {
            "pieces": pieces(args.fanout_pieces),
            "first_delay": 0.0,
            "piece_delay": args.fanout_piece_delay,
        },
        # (d) is benchmarks/load.py's hold, warm-up included.
        MARKERS["single"]: {"pieces": pieces(20), "first_delay": 0.0, "piece_delay": 0.005},
        MARKERS["hold"]: {
            "pieces": pieces(20),
            "first_delay": 0.0,
            "piece_delay": args.hold_seconds / 20,
        },
    }
    markers = {"log": LOG_MARKER, "fanout": FANOUT_MARKER, **MARKERS}
    ledger = Ledger({key: "".join(spec[m]["pieces"]) for key, m in markers.items() if m in spec})
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "work"
    workdir.mkdir(exist_ok=True)
    with ExitStack() as stack:
        stub_url, stub_pid = stack.enter_context(run_stub(spec))
        record_affinity("stub", stub_pid, pinning)
        deployments = [
            stack.enter_context(deployed(tree, stub_url, workdir, pinning, dict(args.setting)))
            for tree in args.src
        ]
        record_affinity("load_generator", os.getpid(), pinning)
        results = uvloop.run(run_all(deployments, args, ledger, stub_pid))
    report["results"] = {label: summarise_rounds(r, args) for label, r in results.items()}
    report["pinning"] = vars(pinning)
    report["exactness"] = ledger.summary()
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["warnings"] = warnings(report)
    report["wall_s"] = time.perf_counter() - started_wall
    write_results(RESULTS, "redis_log", started_at, report)
    print(report_text(report))
    if report["exactness"]["mismatches"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
