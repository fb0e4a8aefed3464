"""Start-up benchmark (issue 25, step 1): what starting an answer costs, against main and the relay.

    uv run --frozen python -m benchmarks.startup [--rounds 3] [--answers 400] [--burst 200]
        [--baseline-src DIR] [--profile]
    (./benchmarks/run.sh runs it with the defaults, about 6 minutes on 2 cores)

Processes, all on 127.0.0.1 and up for the whole run, pinned as in
benchmarks/load.py (the services on core 0; the stub and this load generator on
core 1; when pinning is impossible the output and the JSON say so):
- the upstream stub (benchmarks/load_stub.py), replying "Hi" "." at once;
- `main`: the service from `--baseline-src` (main before this round's work);
- `branch`: the service from this tree;
- one more service for each `--src LABEL=DIR` (an intermediate step's src/);
- `relay`: benchmarks/chain_relay.py, the same chain relayed by plain
  sse-starlette (the reference for what a start needs at least).

Two loads, each measured `--rounds` times per target; within a round the
targets take turns, in an order that rotates every round:
(1) short: `--answers` answers of 2 tokens, `--concurrency` at a time
    (benchmarks/tracing.py's short answers): CPU-ms per answer;
(2) burst: `--burst` answers of 2 tokens started at once, each a question of
    its own: CPU-ms per answer, and time to first text p50/p99 (pooled over
    the rounds), what a burst of newcomers feels on one core.
CPU is the target process's utime + stime (psutil) from `--settle` seconds
before a load to `--settle` seconds after it. Every answer must end with
`done` and carry the stub's text byte for byte (load.py's Ledger); the run
exits 1 otherwise.

`--profile`: the short load once more on `main` and `branch` under py-spy
(after the measured rounds; py-spy runs on the load core), and where a start
goes: profiled CPU-ms per answer, split by the library that owns the innermost
frame we name (LAYERS), and the top functions, self and inclusive.

Results: a table on stdout, JSON in benchmarks/results/startup-<UTC timestamp>.json
and startup.json (the latest).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import uvloop
from tests.support.service import run_services

from benchmarks.load import (
    LOAD_CORE,
    RESULTS,
    SERVICE_CORE,
    Ledger,
    Stream,
    Target,
    core_busy_seconds,
    lift_open_files,
    one_stream,
    pin_load_generator,
    record_affinity,
    report_end,
    report_start,
    run_relay,
    run_stub,
    service_settings,
    spawned_on,
)
from benchmarks.measure import (
    BASELINE_SRC,
    cpu_seconds,
    holds_package,
    percentile,
    source_tree,
    write_results,
)
from benchmarks.profile import _no_line, package_of, read_collapsed
from benchmarks.redis_log_profile import SAMPLE_RATE, recording
from benchmarks.tracing import MARKERS, SHORT_PIECES, short_answers

LOADS = ("short", "burst")
# Who a profiled sample's CPU is for: the innermost frame in one of these
# packages (pydantic, json, copy, typing and the standard library are what
# they call, so they count for their caller).
LAYERS = {
    "langchain_core": "LangChain core (config, callbacks, runnables, parser)",
    "langchain_openai": "langchain-openai (ChatOpenAI: payload, chunks)",
    "openai": "openai SDK (request build, options, SSE decoding)",
    "httpx": "httpx / httpcore / h11 / anyio (transport)",
    "httpcore": "httpx / httpcore / h11 / anyio (transport)",
    "h11": "httpx / httpcore / h11 / anyio (transport)",
    "anyio": "httpx / httpcore / h11 / anyio (transport)",
    "starlette": "starlette / fastapi / uvicorn / middleware",
    "fastapi": "starlette / fastapi / uvicorn / middleware",
    "uvicorn": "starlette / fastapi / uvicorn / middleware",
    "asgi_correlation_id": "starlette / fastapi / uvicorn / middleware",
    "secure": "starlette / fastapi / uvicorn / middleware",
    "sse_starlette": "sse-starlette",
    "qa_service": "qa_service (our own code)",
    "prometheus_client": "metrics and logs",
    "structlog": "metrics and logs",
    "logging": "metrics and logs",
}
OTHER = "asyncio, uvloop and the rest"
IDLE = ("WorkerThread.run ",)


async def burst_answers(target: Target, tag: str, count: int) -> list[Stream]:
    """`count` 2-token answers started at once, each a question of its own."""
    questions = [f"{MARKERS['short']}-{tag}-{n}" for n in range(count)]
    return list(await asyncio.gather(*(one_stream(target, "burst", q) for q in questions)))


async def measured(
    target: Target, load: str, tag: str, ledger: Ledger, args: argparse.Namespace
) -> dict[str, Any]:
    """One load on one target: its CPU over the load and the settles around it."""
    await asyncio.sleep(args.settle)
    cpu0, cores0, wall0 = cpu_seconds(target.pid), core_busy_seconds(), time.perf_counter()
    if load == "short":
        streams = await short_answers(target, tag, args.answers, args.concurrency)
    else:
        streams = await burst_answers(target, tag, args.burst)
    load_s = time.perf_counter() - wall0
    await asyncio.sleep(args.settle)
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(target.pid) - cpu0
    ledger.check(streams, "short")
    cores = [b - a for a, b in zip(cores0, core_busy_seconds(), strict=True)]
    done = [s for s in streams if s.outcome == "done"]
    return {
        "cpu_s": cpu,
        "answers": len(done),
        "load_s": load_s,
        "ttfts": [s.ttft for s in done if s.ttft is not None],
        # Everything core 0 did over the window, this target's CPU included:
        # above its own share is other jobs on the machine.
        "service_core_busy": cores[SERVICE_CORE] / wall if len(cores) > SERVICE_CORE else None,
        "foreign_core0": max(0.0, cores[SERVICE_CORE] - cpu) / wall
        if len(cores) > SERVICE_CORE
        else None,
    }


def summarise(runs: dict[str, list[dict[str, Any]]], load: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, rows in runs.items():
        each = [r["cpu_s"] / r["answers"] * 1000 for r in rows if r["answers"]]
        row: dict[str, Any] = {
            "cpu_ms_per_answer_median": statistics.median(each),
            "cpu_ms_per_answer_each_round": each,
            "foreign_core0_max": max(r["foreign_core0"] or 0.0 for r in rows),
        }
        if load == "burst":
            ttfts = [t for r in rows for t in r["ttfts"]]
            row["ttft_p50_ms"] = percentile(ttfts, 0.5) * 1000
            row["ttft_p99_ms"] = percentile(ttfts, 0.99) * 1000
            row["ttft_p99_ms_each_round"] = [percentile(r["ttfts"], 0.99) * 1000 for r in rows]
        row["runs"] = [{k: v for k, v in r.items() if k != "ttfts"} for r in rows]
        result[name] = row
    for name in runs:
        for against in ("main", "relay"):
            if name == against or against not in runs:
                continue
            each = [
                (a["cpu_s"] / a["answers"]) / (b["cpu_s"] / b["answers"])
                for a, b in zip(runs[name], runs[against], strict=True)
            ]
            result[name][f"to_{against}"] = {
                "median_of_rounds": statistics.median(each),
                "min": min(each),
                "max": max(each),
            }
    return result


# ---------------------------------------------------------------- profile


def layer_of(stack: tuple[str, ...]) -> str:
    for frame in reversed(stack):
        if (layer := LAYERS.get(package_of(frame))) is not None:
            return layer
    return OTHER


def split(stacks: Counter[tuple[str, ...]], cpu_ms: float) -> dict[str, Any]:
    """`cpu_ms` (the measured CPU-ms per answer) shared out by the samples: by layer,
    and the top functions (self and inclusive).

    Shares, not py-spy's own times: on a busy machine a process that waits for
    its core looks busy to py-spy (`--nonblocking` cannot tell), so its
    samples add up to more than the CPU it got. An idle worker thread
    (WorkerThread.run waiting for work) is left out for the same reason.
    """
    stacks = Counter({s: n for s, n in stacks.items() if not s[-1].startswith(IDLE)})
    per = cpu_ms / max(1, sum(stacks.values()))
    layers: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        layers[layer_of(stack)] += count
        self_time[_no_line(stack[-1])] += count
        for frame in {_no_line(f) for f in stack}:
            inclusive[frame] += count
    return {
        "samples": sum(stacks.values()),
        "cpu_ms": round(cpu_ms, 3),
        "layers_ms": {k: round(v * per, 3) for k, v in layers.most_common()},
        "top_self_ms": {k: round(v * per, 3) for k, v in self_time.most_common(25)},
        "top_inclusive_ms": {k: round(v * per, 3) for k, v in inclusive.most_common(60)},
    }


async def profile(
    targets: dict[str, Target], ledger: Ledger, args: argparse.Namespace, stamp: str
) -> dict[str, Any]:
    result: dict[str, Any] = {"sample_rate": SAMPLE_RATE}
    for name in ("main", "branch"):
        if name not in targets:
            continue
        prefix = RESULTS / f"startup-{stamp}"
        with recording({name: targets[name]}, prefix) as files:
            cpu0 = cpu_seconds(targets[name].pid)
            streams = await short_answers(
                targets[name], f"{args.nonce}-profile-{name}", args.answers, args.concurrency
            )
            await asyncio.sleep(args.settle)
            cpu_ms = (cpu_seconds(targets[name].pid) - cpu0) * 1000 / len(streams)
        ledger.check(streams, "short")
        result[name] = {
            "raw_stacks": str(files[name].relative_to(RESULTS.parents[1])),
            **split(read_collapsed(files[name]), cpu_ms),
        }
    return result


# ---------------------------------------------------------------- report


def report_text(report: dict[str, Any]) -> str:
    args, machine = report["args"], report["machine"]
    lines = [
        f"\nStart-up: {args['rounds']} rounds, targets in turn (order rotating);"
        f" settle {args['settle']} s around each load; commit {report['git']['commit'][:10]}"
        f"{' (dirty)' if report['git']['dirty'] else ''}",
        f"  Python {machine['python']}; load average"
        f" {' '.join(f'{x:.2f}' for x in machine['loadavg_start'])} at start,"
        f" {' '.join(f'{x:.2f}' for x in machine['loadavg_end'])} at end",
        f"  pinning: {'ok' if report['pinning']['ok'] else 'NOT PINNED'}"
        f" ({report['pinning']['detail']})",
    ]
    titles = {
        "short": f"(1) {args['answers']} answers of 2 tokens, {args['concurrency']} at a time",
        "burst": f"(2) a burst of {args['burst']} answers of 2 tokens at once",
    }
    for load, title in titles.items():
        part = report["loads"].get(load)
        if part is None:
            continue
        lines += [
            f"\n{title}",
            f"  {'':7} {'CPU-ms/answer':>13} {'rounds':>24} {'to main [range]':>22}"
            f" {'to relay':>9}"
            + (f" {'TTFT p50':>9} {'p99':>8}" if load == "burst" else "")
            + f" {'foreign':>8}",
        ]
        for name in report["targets"]:
            row = part[name]
            rounds = ", ".join(f"{v:.2f}" for v in row["cpu_ms_per_answer_each_round"])
            main = row.get("to_main")
            to_main = (
                f"{main['median_of_rounds']:.3f} [{main['min']:.2f}-{main['max']:.2f}]"
                if main
                else ""
            )
            relay = row.get("to_relay")
            to_relay = f"{relay['median_of_rounds']:.3f}" if relay else ""
            ttft = (
                f" {row['ttft_p50_ms']:9.1f} {row['ttft_p99_ms']:8.1f}" if load == "burst" else ""
            )
            lines.append(
                f"  {name:7} {row['cpu_ms_per_answer_median']:13.3f} {rounds:>24}"
                f" {to_main:>22} {to_relay:>9}{ttft} {row['foreign_core0_max']:8.0%}"
            )
    if "profile" in report:
        lines.append(
            f"\nprofile (py-spy, {SAMPLE_RATE}/s, short load once more): CPU-ms an answer,"
            " shared out by the samples"
        )
        for name in ("main", "branch"):
            if (row := report["profile"].get(name)) is None:
                continue
            lines.append(f"  {name}: {row['cpu_ms']:.3f} ({row['samples']} samples)")
            lines += [f"    {ms:7.3f}  {layer}" for layer, ms in row["layers_ms"].items()]
    lines += report_end(report)
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target and load")
    parser.add_argument("--answers", type=int, default=400, help="(1) short answers a round")
    parser.add_argument("--concurrency", type=int, default=20, help="(1) short answers at once")
    parser.add_argument("--burst", type=int, default=200, help="(2) answers started at once")
    parser.add_argument("--settle", type=float, default=1.0, help="quiet seconds around a load")
    parser.add_argument(
        "--baseline-src",
        type=source_tree,
        default=BASELINE_SRC,
        help="the src/ of main before this round (`git archive 94bbced src | tar -x -C DIR`);"
        " left out when there is none",
    )
    parser.add_argument(
        "--src",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="one more service, from the src/ in DIR, named LABEL (repeatable): an"
        " intermediate step's tree, say, to measure each step in the same run",
    )
    parser.add_argument("--no-relay", action="store_true", help="leave out the chain relay")
    parser.add_argument("--profile", action="store_true", help="py-spy on main and branch, after")
    args = parser.parse_args(argv)
    args.nonce = f"{int(time.time())}"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started_wall, started_at = time.perf_counter(), datetime.now(UTC)
    report = report_start(args, started_at, loads={})
    lift_open_files()
    pinning = pin_load_generator(
        f"services and relay on core {SERVICE_CORE}; stub and load generator on {LOAD_CORE}"
    )
    spec = {MARKERS["short"]: {"pieces": SHORT_PIECES, "first_delay": 0.0, "piece_delay": 0.0}}
    ledger = Ledger({"short": "".join(SHORT_PIECES)})
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    # Left out when there is no such tree (`git archive 94bbced src | tar -x -C DIR` makes
    # one); a directory without the package would run this tree as "main".
    with_main = holds_package(args.baseline_src.resolve())
    report["main_src"] = str(args.baseline_src) if with_main else None
    with ExitStack() as stack:
        stub_url, stub_pid = stack.enter_context(run_stub(spec))
        base = service_settings(stub_url)
        trees = [
            [label, str(source_tree(tree))]
            for label, tree in (label_dir.split("=", 1) for label_dir in args.src)
        ]
        if with_main:
            trees.insert(0, ["main", str(args.baseline_src)])
        settings = {label: {**base, "PYTHONPATH": tree} for label, tree in trees}
        settings["branch"] = base
        with spawned_on(SERVICE_CORE, pinning):
            running = stack.enter_context(run_services(list(settings.values()), workdir))
            targets = {
                name: Target(name, one.url, one.process.pid, "service")
                for name, one in zip(settings, running, strict=True)
            }
            if not args.no_relay:
                url, pid = stack.enter_context(
                    run_relay("benchmarks.chain_relay", stub_url, workdir)
                )
                targets["relay"] = Target("relay", url, pid, "chain_relay")
        report["targets"] = list(targets)
        for name, target in targets.items():
            record_affinity(name, target.pid, pinning)
        record_affinity("stub", stub_pid, pinning)
        record_affinity("load_generator", os.getpid(), pinning)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            load: {name: [] for name in targets} for load in LOADS
        }

        async def run_all() -> None:
            for target in targets.values():  # warm-up: imports, pools, caches
                ledger.check(await short_answers(target, f"{args.nonce}-warm", 60, 20), "short")
                ledger.check(await burst_answers(target, f"{args.nonce}-warm", 50), "short")
            names = list(targets)
            for round_ in range(args.rounds):
                turn = names[round_ % len(names) :] + names[: round_ % len(names)]
                for load in LOADS:
                    for name in turn:
                        tag = f"{args.nonce}-{name}-r{round_}"
                        runs[load][name].append(
                            await measured(targets[name], load, tag, ledger, args)
                        )
            if args.profile:
                stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
                report["profile"] = await profile(targets, ledger, args, stamp)

        try:
            uvloop.run(run_all())
        except (KeyboardInterrupt, RuntimeError, OSError) as exc:
            report["unfinished"] = f"{type(exc).__name__}: {exc}"
    for load in LOADS:
        if all(len(rows) == args.rounds for rows in runs[load].values()):
            report["loads"][load] = summarise(runs[load], load)
    report["pinning"] = vars(pinning)
    report["exactness"] = ledger.summary()
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["wall_s"] = time.perf_counter() - started_wall
    write_results(RESULTS, "startup", started_at, report)
    print(report_text(report))
    if ledger.mismatches or report.get("unfinished"):
        sys.exit(1)


if __name__ == "__main__":
    main()
