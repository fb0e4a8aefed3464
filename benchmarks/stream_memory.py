"""Memory per open stream, and what holds it, by owner (issue 25, step 5).

    uv run --frozen python -m benchmarks.stream_memory [--streams 400] [--rounds 3]
        [--baseline-src DIR]
    (./benchmarks/run.sh runs it with the defaults, about 6 minutes on 2 cores)

Targets, as in benchmarks/load.py (c): the chain relay (benchmarks/chain_relay.py,
a plain sse-starlette relay of the same chain), the service from an older
`src/` (`--baseline-src`, as service_base), and the service of this tree; the
stub (benchmarks/load_stub.py) sends each held reply's first text at once, then
one piece every `--hold-seconds`/20 s.

Each round starts every target afresh (memory the allocator kept from an
earlier round would hide the growth) and measures them one after another, the
order rotating every round. For each target: two warm-up bursts of 10 short
answers, VmRSS ("before", median of 3), then `--streams` held streams; once
every one has had its first text, and `--settle` s later, VmRSS again ("open").
RSS per stream = (open - before) / streams. Then the streams end; every one
must be whole and exact (load.py's Ledger).

The breakdown (`--breakdown`, on by default, after the RSS rounds): each target
afresh once more, with benchmarks/memory_probe/sitecustomize.py loaded, which
starts tracemalloc after the warm-up and, with every stream open, reports the
traced memory still held by owner (the newest frame outside the standard
library and anyio/pydantic: who asked for it), by allocating package and by
traceback, the live objects' growth by type, and glibc's heap (mallinfo2: in
use and free). Per stream is each of those over `--streams`. tracemalloc costs
memory of its own, so the RSS of that round is not used.

Every result records the machine's load (load averages, other processes' share
of each core), the Python version and the git commit; JSON in
benchmarks/results/stream_memory-<timestamp>.json and stream_memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from tests.support.service import REPO, run_service

from benchmarks.load import (
    LOAD_CORE,
    MARKERS,
    RESULTS,
    SERVICE_CORE,
    Ledger,
    Stream,
    Target,
    burst,
    core_busy_seconds,
    lift_open_files,
    one_stream,
    own_cpu,
    pieces,
    pin_load_generator,
    record_affinity,
    report_end,
    report_start,
    run_relay,
    run_stub,
    service_settings,
    spawned_on,
    vm_rss_kb,
)
from benchmarks.measure import cpu_seconds, source_tree, write_results

PROBE = REPO / "benchmarks" / "memory_probe"
PROBE_DEADLINE = 180.0  # a snapshot of 400 streams' allocations takes a while
OPEN_DEADLINE = 90.0
# The breakdown's reply: its first text at once, then nothing for a long while.
# Under tracemalloc every allocation costs many times more, and a process on a
# shared core could not keep up with the RSS rounds' 20 pieces per stream.
IDLE_MARKER = "mk-idle"


# ---------------------------------------------------------------- the probe


def ask_probe(folder: Path, pid: int, command: str) -> dict[str, Any]:
    """Run `command` in the probe of process `pid` (memory_probe/sitecustomize.py)."""
    out = folder / f"{pid}.out"
    out.unlink(missing_ok=True)
    (folder / f"{pid}.cmd").write_text(command)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + PROBE_DEADLINE
    while not out.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the probe in {pid} did not answer {command!r}")
        time.sleep(0.05)
    answer: dict[str, Any] = json.loads(out.read_text())
    if "error" in answer:
        raise RuntimeError(f"the probe in {pid} failed on {command!r}: {answer['error']}")
    return answer


async def ask_probe_async(folder: Path, pid: int, command: str) -> dict[str, Any]:
    return await asyncio.to_thread(ask_probe, folder, pid, command)


# ---------------------------------------------------------------- one target


async def rss_kb_median(pid: int) -> float:
    samples = []
    for _ in range(3):
        samples.append(vm_rss_kb(pid))
        await asyncio.sleep(0.1)
    return statistics.median(samples)


async def hold(
    target: Target, ledger: Ledger, args: argparse.Namespace, probe: Path | None
) -> dict[str, Any]:
    """One target's RSS per held stream; with `probe`, its breakdown instead
    (`--breakdown-streams` idle streams)."""
    count = args.breakdown_streams if probe is not None else args.streams
    marker_key = "idle" if probe is not None else "hold"
    for _ in range(2):
        ledger.check(await burst(target, "warmup", MARKERS["single"], 10), "single")
    await asyncio.sleep(1.0)
    before = await rss_kb_median(target.pid)
    if probe is not None:
        await ask_probe_async(probe, target.pid, "start")
    first_texts = 0
    all_open = asyncio.Event()
    result: dict[str, Any] = {"streams": count, "rss_before_mb": before / 1024}

    failed = 0

    async def tracked() -> Stream:
        nonlocal first_texts, failed
        counted = False

        def on_event(event: dict[str, Any]) -> None:
            nonlocal first_texts, counted
            if not counted and event.get("text"):
                counted = True
                first_texts += 1
                if first_texts + failed == count:
                    all_open.set()

        try:
            marker = IDLE_MARKER if probe is not None else MARKERS["hold"]
            return await one_stream(target, marker_key, marker, on_event=on_event)
        finally:
            if not counted:  # ended without text: not open, and the Ledger reports it
                failed += 1
                if first_texts + failed == count:
                    all_open.set()

    started = time.perf_counter()
    streams = [asyncio.create_task(tracked()) for _ in range(count)]
    try:
        try:
            async with asyncio.timeout(OPEN_DEADLINE):
                await all_open.wait()
        except TimeoutError:
            ended = await asyncio.gather(*streams)
            outcomes = Counter((s.outcome, s.pieces) for s in ended)
            raise RuntimeError(
                f"{target.name}: {first_texts} of {count} streams had text"
                f" after {OPEN_DEADLINE} s; (outcome, pieces) at their end: {outcomes}"
            ) from None
        result["all_open_after_s"] = time.perf_counter() - started
        await asyncio.sleep(args.settle)
        opened = await rss_kb_median(target.pid)
        result["rss_open_mb"] = opened / 1024
        # Only when every stream is open: one that failed holds nothing, and a
        # round with failures says so (its figure left out of the summary).
        result["failed_before_text"] = failed
        result["rss_mb_per_stream"] = (opened - before) / 1024 / count if not failed else None
        if probe is not None:
            result["breakdown"] = await ask_probe_async(probe, target.pid, "snapshot")
        result["open_while_measured"] = sum(not s.done() for s in streams)
    finally:
        done = list(await asyncio.gather(*streams))
    ledger.check(done, marker_key)
    result["complete"] = sum(s.outcome == "done" for s in done)
    return result


# ---------------------------------------------------------------- rounds


async def measure_in_turn(
    order: list[Target], ledger: Ledger, args: argparse.Namespace, probe: Path | None
) -> dict[str, Any]:
    return {target.name: await hold(target, ledger, args, probe) for target in order}


def start_targets(
    stack: ExitStack,
    stub_url: str,
    args: argparse.Namespace,
    workdir: Path,
    probe: Path,
    pinning: Any,
) -> list[Target]:
    """Fresh processes for every target, on the service core, the probe loaded."""
    probe_env = {"QA_MEMORY_PROBE_DIR": str(probe)}
    targets = []
    with spawned_on(SERVICE_CORE, pinning):
        url, pid = stack.enter_context(
            run_relay(
                "benchmarks.chain_relay",
                stub_url,
                workdir,
                extra_env={**probe_env, "PYTHONPATH": f"{PROBE}:{REPO}"},
            )
        )
        targets.append(Target("chain_relay", url, pid, "chain_relay"))
        if args.baseline_src is not None:
            settings = {
                **service_settings(stub_url),
                **probe_env,
                "PYTHONPATH": f"{PROBE}:{args.baseline_src}",
            }
            base = stack.enter_context(run_service(settings, workdir))
            targets.append(Target("service_base", base.url, base.process.pid, "service"))
        settings = {**service_settings(stub_url), **probe_env, "PYTHONPATH": str(PROBE)}
        ours = stack.enter_context(run_service(settings, workdir))
        targets.append(Target("service", ours.url, ours.process.pid, "service"))
    for target in targets:
        record_affinity(target.name, target.pid, pinning)
    return targets


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    names = list(rounds[0]["targets"])
    result: dict[str, Any] = {}
    for name in names:
        values = [
            r["targets"][name]["rss_mb_per_stream"]
            for r in rounds
            if r["targets"][name]["rss_mb_per_stream"] is not None
        ]
        if not values:
            result[name] = {"rounds": [], "note": "no round with every stream open"}
            continue
        result[name] = {
            "rss_mb_per_stream_median": statistics.median(values),
            "rss_mb_per_stream_min": min(values),
            "rss_mb_per_stream_max": max(values),
            "rounds": values,
        }
    relay = result["chain_relay"].get("rss_mb_per_stream_median")
    for name in names:
        if relay and "rss_mb_per_stream_median" in result[name]:
            result[name]["to_relay"] = result[name]["rss_mb_per_stream_median"] / relay
    if "service_base" in result:
        # Ratio per round (the same machine at the same moment), then their median.
        pairs = [
            (
                r["targets"]["service"]["rss_mb_per_stream"],
                r["targets"]["service_base"]["rss_mb_per_stream"],
            )
            for r in rounds
        ]
        ratios = [ours / base for ours, base in pairs if ours and base]
        if ratios:
            result["service"]["to_base_by_round"] = ratios
            result["service"]["to_base_median"] = statistics.median(ratios)
    return result


def breakdown_table(breakdown: dict[str, dict[str, Any]], streams: int) -> list[str]:
    """KB per stream by owner, each target a column."""
    names = list(breakdown)
    owners: dict[str, float] = {}
    for name in names:
        for who, size in breakdown[name]["by_owner"].items():
            owners[who] = max(owners.get(who, 0.0), size)
    shown = sorted(owners, key=lambda who: -owners[who])[:25]
    lines = [f"  {'KB per stream, by owner':44}" + "".join(f"{n:>14}" for n in names)]
    for who in shown:
        cells = "".join(
            f"{breakdown[n]['by_owner'].get(who, 0) / 1024 / streams:14.1f}" for n in names
        )
        lines.append(f"  {who[:44]:44}{cells}")
    lines.append(
        f"  {'traced, all owners':44}"
        + "".join(f"{breakdown[n]['traced_bytes'] / 1024 / streams:14.1f}" for n in names)
    )
    for field_name, label in (("uordblks", "glibc heap in use"), ("fordblks", "glibc heap free")):
        cells = ""
        for n in names:
            b, a = breakdown[n]["malloc_before"], breakdown[n]["malloc_after"]
            cells += (
                f"{(a.get(field_name, 0) - b.get(field_name, 0)) / 1024 / streams:14.1f}"
                if a
                else f"{'-':>14}"
            )
        lines.append(f"  {'Δ ' + label + ' (with tracemalloc)':44}{cells}")
    lines.append(f"  {'objects per stream, by type':44}")
    types: dict[str, float] = {}
    for n in names:
        for kind, count in breakdown[n]["type_growth"].items():
            types[kind] = max(types.get(kind, 0.0), count)
    for kind in sorted(types, key=lambda k: -types[k])[:20]:
        cells = "".join(
            f"{breakdown[n]['type_growth'].get(kind, 0) / streams:14.2f}" for n in names
        )
        lines.append(f"    {kind[:42]:42}{cells}")
    return lines


def report_text(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"\nstream memory  {report['started_at']}  commit {report['git']['commit'][:10]}"
        f"{' (dirty)' if report['git']['dirty'] else ''}",
        f"  Python {machine['python']}, load average {machine['loadavg_start']} at start,"
        f" {machine['loadavg_end']} at end; other processes used"
        f" {machine.get('foreign_busy_whole_run')} of the cores",
        f"  pinning: {'ok' if report['pinning']['ok'] else 'NOT PINNED'}"
        f" ({report['pinning']['detail']})",
        f"\nRSS per open stream, {report['args']['streams']} held streams, MB"
        f" ({len(report['rounds'])} rounds, fresh processes each)",
        f"  {'':14}{'median':>8}{'min':>8}{'max':>8}{'/relay':>8}  rounds",
    ]
    for name, row in report["summary"].items():
        if not row["rounds"]:
            lines.append(f"  {name:14}{row['note']}")
            continue
        lines.append(
            f"  {name:14}{row['rss_mb_per_stream_median']:8.3f}{row['rss_mb_per_stream_min']:8.3f}"
            f"{row['rss_mb_per_stream_max']:8.3f}{row.get('to_relay', 0):8.2f}  "
            + " ".join(f"{v:.3f}" for v in row["rounds"])
        )
    if "to_base_median" in report["summary"].get("service", {}):
        service = report["summary"]["service"]
        lines.append(
            "  service / service_base, by round: "
            + " ".join(f"{v:.2f}" for v in service["to_base_by_round"])
            + f" (median {service['to_base_median']:.2f})"
        )
    if breakdown := report.get("breakdown"):
        count = int(report["args"]["breakdown_streams"])
        lines.append(
            f"\nbreakdown: {count} idle streams open (tracemalloc, fresh processes, one round)"
        )
        lines += breakdown_table(breakdown, count)
    lines += report_end(report)
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=400, help="streams held open at once")
    parser.add_argument("--hold-seconds", type=float, default=20.0, help="each one's length")
    parser.add_argument("--settle", type=float, default=1.0, help="after all open, s")
    parser.add_argument("--rounds", type=int, default=3, help="RSS rounds (fresh processes)")
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false")
    parser.add_argument(
        "--breakdown-streams", type=int, default=50, help="idle streams held for the breakdown"
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=60.0, help="the breakdown's streams' length"
    )
    parser.add_argument(
        "--baseline-src",
        type=source_tree,
        help="also measure the qa_service package in this src/ directory as service_base",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started_wall, started_at = time.perf_counter(), datetime.now(UTC)
    report = report_start(
        args,
        started_at,
        rounds=[],
    )
    lift_open_files()
    pinning = pin_load_generator(
        f"services and chain relay on core {SERVICE_CORE}, stub and load generator on {LOAD_CORE}"
    )
    spec = {
        MARKERS["single"]: {"pieces": pieces(20), "first_delay": 0.05, "piece_delay": 0.005},
        MARKERS["hold"]: {
            "pieces": pieces(20),
            "first_delay": 0.0,
            "piece_delay": args.hold_seconds / 20,
        },
        # Pieces 10 s apart: within the service's upstream idle timeout (30 s).
        IDLE_MARKER: {
            "pieces": pieces(max(2, round(args.idle_seconds / 10))),
            "first_delay": 0.0,
            "piece_delay": 10.0,
        },
    }
    markers = {"single": MARKERS["single"], "hold": MARKERS["hold"], "idle": IDLE_MARKER}
    ledger = Ledger({key: "".join(spec[m]["pieces"]) for key, m in markers.items()})
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    cores0, wall0, own0 = core_busy_seconds(), time.perf_counter(), own_cpu()
    ours_cpu = 0.0
    with tempfile.TemporaryDirectory(prefix="stream-memory-") as probe_dir:
        probe = Path(probe_dir)
        with run_stub(spec) as (stub_url, stub_pid):
            plans = [(i, False) for i in range(args.rounds)]
            if args.breakdown:
                plans.append((args.rounds, True))
            for index, with_probe in plans:
                with ExitStack() as stack:
                    targets = start_targets(stack, stub_url, args, workdir, probe, pinning)
                    cpu0 = sum(cpu_seconds(t.pid) for t in targets)
                    shift = index % len(targets)
                    order = targets[shift:] + targets[:shift]
                    measured = uvloop.run(
                        measure_in_turn(order, ledger, args, probe if with_probe else None)
                    )
                    ours_cpu += sum(cpu_seconds(t.pid) for t in targets) - cpu0
                    if with_probe:
                        report["breakdown"] = {
                            t.name: {
                                **measured[t.name]["breakdown"],
                                "failed_before_text": measured[t.name]["failed_before_text"],
                            }
                            for t in targets
                        }
                    else:
                        report["rounds"].append(
                            {"order": [t.name for t in order], "targets": measured}
                        )
            ours_cpu += cpu_seconds(stub_pid)
    wall = time.perf_counter() - wall0
    busy = [b - a for a, b in zip(cores0, core_busy_seconds(), strict=True)]
    # Whatever both cores did beyond this benchmark's processes, as a share of one core.
    report["machine"]["foreign_busy_whole_run"] = round(
        max(0.0, sum(busy) - ours_cpu - (own_cpu() - own0)) / wall / len(busy), 3
    )
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["pinning"] = vars(pinning)
    report["summary"] = summary(report["rounds"]) if report["rounds"] else {}
    report["exactness"] = ledger.summary()
    report["wall_s"] = time.perf_counter() - started_wall
    write_results(RESULTS, "stream_memory", started_at, report)
    print(report_text(report))
    if report["exactness"]["mismatches"]:
        sys.exit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
