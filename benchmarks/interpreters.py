"""The interpreter, measured: the service, its stub and the chain relay on each Python.

    uv run --frozen python -m benchmarks.interpreters [--python /path/to/python3.12 ...]
    (./benchmarks/run.sh runs it with the defaults: 29 minutes beside other jobs, load 8-22)

For each interpreter (this one, and every `--python`; by default also the
python3.12 and python3.13 that pyenv or PATH offer), a virtualenv of the
locked dependencies (`uv sync --frozen`, from uv's cache, under
benchmarks/results/work/venv-<version>) runs a group of its own, all on
127.0.0.1 and up for the whole run:
- the upstream stub (benchmarks/load_stub.py), on core 1 with this load
  generator (which stays on this process's Python for every group);
- the chain relay (benchmarks/chain_relay.py), the baseline of its group;
- the service, every setting at its default but load.py's `service_settings`.
  Relay and service on core 0.

Figures (benchmarks/load.py's scenarios and tracing.py's short answers,
reused), every interpreter's group in turn within each round, `--rounds`
rounds, so drift on the shared machine hits each group alike:
- RSS growth per open stream: `--hold-streams` held open for
  `--hold-seconds` (load.py's (c)), once, first, while the processes are fresh;
- service CPU per 2-token answer: `--answers` answers, 20 at a time;
- CPU-s per 1,000 upstream tokens: `--streams` streams of `--tokens` tokens
  at 50 tokens/s (load.py's (b));
- time to first text p50/p99 of a burst of `--burst` streams of the same
  reply (load.py's (d)).
Each figure is the median over rounds, with the spread (min, max), and comes
with two ratios, both medians of the per-round ratios: to its own group's
chain relay, and to the same target on the first interpreter (3.11).

Every stream is checked for exactness (load.py's Ledger); the run exits 1 on
any mismatch. Results: a table on stdout and JSON in
benchmarks/results/interpreters-<timestamp>.json (and interpreters.json),
with each interpreter's full version, the load averages at start and end, the
foreign busy share of each core, and the git commit.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from tests.support.service import REPO, run_service

from benchmarks.load import (
    MARKERS,
    RESULTS,
    SERVICE_CORE,
    Ledger,
    Pinning,
    Target,
    core_busy_seconds,
    hold_one,
    lift_open_files,
    own_cpu,
    pieces,
    pin_load_generator,
    record_affinity,
    report_end,
    report_start,
    run_relay,
    run_stub,
    scenario_load,
    service_settings,
    spawned_on,
)
from benchmarks.measure import cpu_seconds, write_results
from benchmarks.tracing import MARKERS as TRACING_MARKERS
from benchmarks.tracing import SHORT_PIECES, short_answers

# uv itself: on PATH, or the module of the system's python3 (docs/development.md).
UV = [shutil.which("uv") or "python3", *([] if shutil.which("uv") else ["-m", "uv"])]
# What each group measures, in this order within a round.
FIGURES = ("cpu_s_per_2_token_answer", "cpu_s_per_1000_tokens", "ttft_p50_ms", "ttft_p99_ms")


@dataclass
class Group:
    """One interpreter's processes."""

    label: str  # "3.12"
    python: str  # the venv's executable
    version: str  # its sys.version
    targets: dict[str, Target] = field(default_factory=dict)  # stub, chain_relay, service...
    # Per target name: figure -> one value per round.
    rounds: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    hold: dict[str, dict[str, Any]] = field(default_factory=dict)

    def measured(self) -> list[str]:
        return [name for name in self.targets if name != "stub"]


def version_of(python: str) -> tuple[str, str]:
    """("3.12", the full sys.version) of an interpreter."""
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.version)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    return out[0], " ".join(out[1:])


def found_interpreters() -> list[str]:
    """python3.12 and python3.13 where PATH or pyenv have them."""
    found = []
    for minor in ("3.12", "3.13"):
        candidates = [shutil.which(f"python{minor}") or ""]
        pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
        candidates += sorted(glob.glob(str(pyenv / "versions" / f"{minor}.*" / "bin" / "python3")))
        for candidate in filter(None, candidates):
            # A pyenv shim of a version not selected exits 127.
            probe = subprocess.run([candidate, "-V"], capture_output=True, timeout=30, check=False)
            if probe.returncode == 0:
                found.append(candidate)
                break
    return found


def synced_venv(python: str, label: str, workdir: Path) -> str:
    """A virtualenv of the locked dependencies on `python` (uv's cache; no download)."""
    if label == f"{sys.version_info.major}.{sys.version_info.minor}":
        return sys.executable
    venv = workdir / f"venv-{label}"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON_DOWNLOADS": "never",
    }
    subprocess.run(
        [*UV, "sync", "--frozen", "--quiet", "-p", python],
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
    )
    return str(venv / "bin" / "python")


@contextmanager
def run_group(
    group: Group, spec: dict[str, Any], workdir: Path, pinning: Pinning
) -> Iterator[None]:
    """The group's stub (on this process's core), relay and services (on SERVICE_CORE)."""
    with ExitStack() as stack:
        stub_url, stub_pid = stack.enter_context(run_stub(spec, group.python))
        group.targets["stub"] = Target("stub", stub_url, stub_pid, "stub")
        with spawned_on(SERVICE_CORE, pinning):
            url, pid = stack.enter_context(
                # Eleven processes import on one core of a shared machine: generous.
                run_relay("benchmarks.chain_relay", stub_url, workdir, group.python, deadline=120)
            )
            group.targets["chain_relay"] = Target("chain_relay", url, pid, "chain_relay")
            service = stack.enter_context(
                run_service(service_settings(stub_url), workdir, python=group.python)
            )
            group.targets["service"] = Target(
                "service", service.url, service.process.pid, "service"
            )
        for name, target in group.targets.items():
            record_affinity(
                f"{group.label}/{name}" if name != "stub" else name, target.pid, pinning
            )
        yield


async def short_answer_cost(target: Target, ledger: Ledger, tag: str, answers: int) -> float:
    """Service CPU-s per 2-token answer, `answers` of them 20 at a time."""
    await asyncio.sleep(0.5)
    cpu0 = cpu_seconds(target.pid)
    streams = await short_answers(target, tag, answers, 20)
    await asyncio.sleep(0.5)  # work the process does after the last byte
    cpu = cpu_seconds(target.pid) - cpu0
    ledger.check(streams, "short")
    return cpu / max(1, sum(s.outcome == "done" for s in streams))


async def one_round(group: Group, ledger: Ledger, args: argparse.Namespace, index: int) -> None:
    targets = list(group.targets.values())
    measured = [group.targets[name] for name in group.measured()]
    record = group.rounds
    for target in measured:
        cost = await short_answer_cost(target, ledger, f"{group.label}-{index}", args.answers)
        record.setdefault(target.name, {}).setdefault("cpu_s_per_2_token_answer", []).append(cost)
    load_args = argparse.Namespace(
        first_delay=0.05, rate=50.0, rounds=1, settle=0.5, tokens=args.tokens
    )
    stub_pid = group.targets["stub"].pid
    load = await scenario_load(targets, stub_pid, ledger, load_args, args.streams, "b_load")
    burst = await scenario_load(targets, stub_pid, ledger, load_args, args.burst, "d_many")
    for target in measured:
        figures = record[target.name]
        figures.setdefault("cpu_s_per_1000_tokens", []).append(
            load[target.name]["cpu_s_per_1000_tokens"]
        )
        figures.setdefault("ttft_p50_ms", []).append(burst[target.name]["ttft_p50_ms"])
        figures.setdefault("ttft_p99_ms", []).append(burst[target.name]["ttft_p99_ms"])
        figures.setdefault("load_core_busy_max", []).append(
            max(load[target.name]["load_core_busy_max"], burst[target.name]["load_core_busy_max"])
        )


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(groups: list[Group]) -> dict[str, Any]:
    """Per group and target: each figure's median and spread, and its two ratios."""
    first = groups[0]
    summary: dict[str, Any] = {}
    for group in groups:
        rows: dict[str, Any] = {}
        relay = group.rounds["chain_relay"]
        for name in group.measured():
            row: dict[str, Any] = {}
            for figure in FIGURES:
                values = group.rounds[name][figure]
                row[figure] = spread(values)
                row[figure]["to_relay"] = statistics.median(
                    v / r for v, r in zip(values, relay[figure], strict=True)
                )
                # The same target on the first interpreter.
                base = first.rounds[name][figure]
                row[figure]["to_first"] = statistics.median(
                    v / b for v, b in zip(values, base, strict=True)
                )
            hold = group.hold[name]
            row["rss_mb_per_stream"] = {
                "value": hold["growth_mb_per_stream"],
                "to_relay": hold["growth_mb_per_stream"]
                / group.hold["chain_relay"]["growth_mb_per_stream"],
                "to_first": hold["growth_mb_per_stream"] / first.hold[name]["growth_mb_per_stream"],
            }
            row["load_core_busy_max"] = max(group.rounds[name]["load_core_busy_max"])
            rows[name] = row
        summary[group.label] = rows
    return summary


def report_text(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"\nqa-service interpreter benchmark  {report['started_at']}"
        f"  commit {report['git']['commit'][:10]}{' (dirty)' if report['git']['dirty'] else ''}",
        f"  load average {' '.join(f'{x:.2f}' for x in machine['loadavg_start'])} at start,"
        f" {' '.join(f'{x:.2f}' for x in machine['loadavg_end'])} at end; other processes used "
        + ", ".join(f"{c} {s:.0%}" for c, s in machine["foreign_busy_whole_run"].items()),
        f"  pinning: {'ok' if report['pinning']['ok'] else 'NOT PINNED'}"
        f" ({report['pinning']['detail']})",
        f"  {report['args']['rounds']} rounds; median [min-max], (x own relay, x same on"
        f" {report['interpreters'][0]['label']})",
    ]
    headings = {
        "cpu_s_per_2_token_answer": ("CPU ms per 2-token answer", 1000),
        "cpu_s_per_1000_tokens": (
            f"CPU-s per 1,000 tokens, {report['args']['streams']} streams",
            1,
        ),
        "ttft_p50_ms": (f"TTFT p50 ms, burst of {report['args']['burst']}", 1),
        "ttft_p99_ms": (f"TTFT p99 ms, burst of {report['args']['burst']}", 1),
    }
    for figure, (title, scale) in headings.items():
        lines.append(f"\n{title}")
        for label, rows in report["summary"].items():
            for name, row in rows.items():
                cell = row[figure]
                lines.append(
                    f"  {label:5} {name:12} {cell['median'] * scale:9.3f}"
                    f" [{cell['min'] * scale:.3f}-{cell['max'] * scale:.3f}]"
                    f"  x{cell['to_relay']:.2f} relay  x{cell['to_first']:.2f}"
                )
    lines.append(f"\nRSS growth per open stream, MB ({report['args']['hold_streams']} held)")
    for label, rows in report["summary"].items():
        for name, row in rows.items():
            cell = row["rss_mb_per_stream"]
            lines.append(
                f"  {label:5} {name:12} {cell['value']:9.3f}"
                f"  x{cell['to_relay']:.2f} relay  x{cell['to_first']:.2f}"
            )
    lines += report_end(report)
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--python",
        action="append",
        default=None,
        help="an interpreter to measure besides this one (repeatable; default: python3.12"
        " and python3.13 where found)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--answers", type=int, default=200, help="2-token answers per round")
    parser.add_argument("--streams", type=int, default=100, help="concurrent long streams")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per long stream")
    parser.add_argument("--burst", type=int, default=200, help="streams started at once")
    parser.add_argument("--hold-streams", type=int, default=300)
    parser.add_argument("--hold-seconds", type=float, default=8.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started_wall, started_at = time.perf_counter(), datetime.now(UTC)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "work"
    workdir.mkdir(exist_ok=True)
    lift_open_files()
    groups = []
    for python in [sys.executable, *(args.python or found_interpreters())]:
        label, version = version_of(python)
        groups.append(Group(label, synced_venv(python, label, workdir), version))
    spec = {
        MARKERS["load"]: {"pieces": pieces(args.tokens), "first_delay": 0.05, "piece_delay": 0.02},
        MARKERS["hold"]: {
            "pieces": pieces(20),
            "first_delay": 0.0,
            "piece_delay": args.hold_seconds / 20,
        },
        MARKERS["single"]: {"pieces": pieces(20), "first_delay": 0.05, "piece_delay": 0.005},
        TRACING_MARKERS["short"]: {"pieces": SHORT_PIECES, "first_delay": 0.0, "piece_delay": 0.0},
    }
    ledger = Ledger(
        {
            "load": "".join(spec[MARKERS["load"]]["pieces"]),
            "hold": "".join(spec[MARKERS["hold"]]["pieces"]),
            "single": "".join(spec[MARKERS["single"]]["pieces"]),
            "short": "".join(SHORT_PIECES),
        }
    )
    report = report_start(
        args,
        started_at,
        interpreters=[{"label": g.label, "python": g.python, "version": g.version} for g in groups],
    )
    pinning = pin_load_generator(
        f"relays and services on core {SERVICE_CORE}, stubs and the load generator on the other"
    )
    with ExitStack() as stack:
        for group in groups:
            stack.enter_context(run_group(group, spec, workdir, pinning))
        record_affinity("load_generator", os.getpid(), pinning)
        everything = [t.pid for g in groups for t in g.targets.values()]

        async def run_all() -> None:
            for group in groups:  # fresh processes first: RSS growth is not hidden
                for name in group.measured():
                    group.hold[name] = await hold_one(
                        group.targets[name], ledger, args.hold_streams
                    )
            for index in range(args.rounds):
                for group in groups:
                    await one_round(group, ledger, args, index)

        ours0, cores0, wall0 = (
            sum(map(cpu_seconds, everything)) + own_cpu(),
            core_busy_seconds(),
            time.perf_counter(),
        )
        try:
            uvloop.run(run_all())
        except (KeyboardInterrupt, RuntimeError, OSError) as exc:
            report["unfinished"] = f"{type(exc).__name__}: {exc}"
        ours = sum(map(cpu_seconds, everything)) + own_cpu() - ours0
        wall = time.perf_counter() - wall0
        busy = sum(core_busy_seconds()) - sum(cores0)
        # Other jobs' share of the machine while this ran, per core on average.
        report["machine"]["foreign_busy_whole_run"] = {
            "both_cores_mean": max(0.0, busy - ours) / wall / max(1, len(cores0))
        }
    report["pinning"] = vars(pinning)
    report["rounds"] = {g.label: g.rounds for g in groups}
    report["hold"] = {g.label: g.hold for g in groups}
    if not report.get("unfinished"):
        report["summary"] = summarise(groups)
    report["exactness"] = ledger.summary()
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["wall_s"] = time.perf_counter() - started_wall
    write_results(RESULTS, "interpreters", started_at, report)
    if "summary" in report:
        print(report_text(report))
    else:
        print(f"UNFINISHED: {report['unfinished']}; written to {report['written_to']}")
    if report["exactness"]["mismatches"] or report.get("unfinished"):
        sys.exit(1)


if __name__ == "__main__":
    main()
