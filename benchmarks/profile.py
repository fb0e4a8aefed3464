"""Where the service's CPU goes under load: a sampling profile (py-spy) of the saturated loop.

    uv run --frozen python -m benchmarks.profile [--streams 100] [--tokens 200] [--rounds 3]

The same set-up as benchmarks/load.py, scenario (b): the stub and this load
generator on core 1, the service alone on core 0, `--streams` concurrent
streams of `--tokens` tokens at `--rate` tokens/s, `--rounds` bursts in a row.
py-spy samples the service's Python stacks (`--nonblocking`: it never pauses
the process, so what it measures is not slowed by measuring) while the bursts
run. Idle samples (the loop waiting in select) are left out, so shares are of
the CPU the service used.

Reported, as shares of the samples:
- by package, "self": where the CPU is spent (the innermost frame's package);
- each of our own additions over a plain relay, and the main library layers
  (FEATURES): "inclusive", every sample with one of its functions anywhere on
  the stack, and "self", samples in its own functions;
- the top functions, self and inclusive.

Results: a table on stdout, JSON in benchmarks/results/profile-<timestamp>.json
(and profile.json, the latest), and py-spy's raw collapsed stacks next to it
(a flame graph tool reads them: e.g. speedscope, inferno).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
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
    Pinning,
    Target,
    burst,
    git_commit,
    pieces,
    run_stub,
    service_settings,
    spawned_on,
    try_pin_self,
)
from benchmarks.measure import cpu_seconds, write_results

# Our additions over a plain relay of the chain, each a pattern for the
# frames that belong to it ("function (path:line)" as py-spy writes them).
FEATURES = {
    "answer task + log append (run.py, stores)": r"\((qa_service/answers/run|qa_service/stores/)",
    "log reader (follow.py, connection.py)": r"\(qa_service/answers/(follow|connection)",
    "native rendering (wire/native.py, sse.py)": r"\(qa_service/wire/",
    "report callback (report.py + langchain's callback manager)": (
        r"^(on_llm_new_token|ahandle_event|_ahandle_event_for_handler) "
        r"\(langchain_core/callbacks/manager|\(qa_service/generation/report"
    ),
    "text-first + batching layer (chat_models.py, batching.py, readahead.py)": (
        r"\(qa_service/(generation/(chat_models|batching)|core/readahead)"
    ),
    "QA_COALESCE_MS window (coalescing.py)": r"\(qa_service/answers/coalescing",
    "writer limits (writer.py: timeout per piece, cap)": r"^stream \(qa_service/generation/writer",
    "response hooks (upstream.py)": r"\(qa_service/generation/upstream",
    "send timeout (sse-starlette's move_on_after per send)": (
        r"^(move_on_after|__enter__|__exit__) \(anyio/"
    ),
    "SDK per-chunk parsing (openai _streaming, construct_type)": r"\(openai/(_streaming|_models)",
    "SDK request set-up (openai create, transforms)": r"^(create|_post|request) \(openai/",
    "langchain per-chunk layers (runnables, output parsers)": (
        r"\(langchain_core/(runnables|output_parsers|tracers)/"
    ),
    "sse-starlette send path": r"\(sse_starlette/",
}
PACKAGE = re.compile(r"\((?:.*site-packages/)?([A-Za-z_][A-Za-z0-9_]*)[/.]")


def package_of(frame: str) -> str:
    found = PACKAGE.search(frame)
    return found.group(1) if found else "?"


def read_collapsed(path: Path) -> Counter[tuple[str, ...]]:
    """py-spy's raw format: one `frame;frame;...;leaf count` line per distinct stack."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def summarize(stacks: Counter[tuple[str, ...]]) -> dict[str, Any]:
    total = sum(stacks.values())
    by_package: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    features: Counter[str] = Counter()
    features_self: Counter[str] = Counter()
    patterns = {name: re.compile(pattern) for name, pattern in FEATURES.items()}
    for stack, count in stacks.items():
        leaf = _no_line(stack[-1])
        by_package[package_of(stack[-1])] += count
        self_time[leaf] += count
        for frame in {_no_line(f) for f in stack}:
            inclusive[frame] += count
        for name, pattern in patterns.items():
            if any(pattern.search(frame) for frame in stack):
                features[name] += count
            if pattern.search(stack[-1]):
                features_self[name] += count

    def shares(counter: Counter[str], n: int | None = None) -> dict[str, float]:
        return {k: round(v / total, 4) for k, v in counter.most_common(n)} if total else {}

    return {
        "samples": total,
        "self_by_package": shares(by_package),
        # Inclusive: anywhere on the stack (for a wrapper, what runs under it
        # too); self: the innermost frame (its own work).
        "features": {
            name: {
                "inclusive": round(features[name] / total, 4),
                "self": round(features_self[name] / total, 4),
            }
            for name in FEATURES
        }
        if total
        else {},
        "top_self": shares(self_time, 25),
        "top_inclusive": shares(inclusive, 40),
    }


def _no_line(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", frame)


def report_text(report: dict[str, Any]) -> str:
    profile = report["profile"]
    lines = [
        f"\nqa-service CPU profile  {report['started_at']}  commit {report['git']['commit'][:10]}"
        f"{' (dirty)' if report['git']['dirty'] else ''}",
        f"  {report['streams']} streams x {report['tokens']} tokens at {report['rate']:g} tok/s,"
        f" {report['rounds']} rounds; {profile['samples']} samples;"
        f" service CPU {report['cpu_s_per_1000_tokens']:.3f} s/1k tokens"
        f" (profiled, so a little above load.py's)",
        "\nself, by package:",
    ]
    lines += [f"  {share:6.1%}  {name}" for name, share in profile["self_by_package"].items()]
    lines.append("\nfeatures: inclusive (anywhere on the stack), self (innermost frame)")
    lines += [
        f"  {row['inclusive']:6.1%} {row['self']:6.1%}  {name}"
        for name, row in profile["features"].items()
    ]
    lines.append("\ntop functions, self:")
    lines += [f"  {share:6.1%}  {name}" for name, share in profile["top_self"].items()]
    lines.append(f"\nwritten to {report['written_to']} (raw stacks: {report['raw_stacks']})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample-rate", type=int, default=250, help="py-spy samples/s")
    parser.add_argument(
        "--service-src",
        type=Path,
        help="profile the qa_service package in this src/ directory instead (e.g. an"
        " exported older commit: `git archive COMMIT src | tar -x -C DIR`)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "work"
    workdir.mkdir(exist_ok=True)
    raw = RESULTS / f"profile-{stamp}.stacks.txt"
    pinning = Pinning(True, f"service on core {SERVICE_CORE}, stub and load on {LOAD_CORE}")
    if (os.cpu_count() or 1) < 2:
        pinning = Pinning(False, "fewer than 2 cores")
    try_pin_self(LOAD_CORE, pinning)
    spec = {
        MARKERS["load"]: {
            "pieces": pieces(args.tokens),
            "first_delay": 0.05,
            "piece_delay": 1 / args.rate,
        }
    }
    ledger = Ledger({"load": "".join(spec[MARKERS["load"]]["pieces"])})
    with ExitStack() as stack:
        stub_url, _stub_pid = stack.enter_context(run_stub(spec))
        with spawned_on(SERVICE_CORE, pinning):
            settings = service_settings(stub_url)
            if args.service_src is not None:
                settings["PYTHONPATH"] = str(args.service_src.resolve())
            service = stack.enter_context(run_service(settings, workdir))
        target = Target("service", service.url, service.process.pid, "service")

        async def load() -> float:
            ledger.check(await burst(target, "warmup", MARKERS["load"], 4), "load")
            # A child that runs alongside, never waited on while the load runs.
            spy = subprocess.Popen(  # noqa: ASYNC220
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(target.pid),
                    "--rate",
                    str(args.sample_rate),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)  # py-spy attaches
            cpu0 = cpu_seconds(target.pid)
            for _ in range(args.rounds):
                ledger.check(await burst(target, "profiled", MARKERS["load"], args.streams), "load")
            cpu = cpu_seconds(target.pid) - cpu0
            spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
            spy.wait(30)
            return cpu

        cpu = uvloop.run(load())
    if ledger.mismatches:
        print(f"MISMATCHES: {ledger.mismatches}")
    report: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "git": git_commit(),
        "service_src": str(args.service_src) if args.service_src else "this checkout",
        "python": sys.version.split()[0],
        "loadavg": list(os.getloadavg()),
        "pinning": vars(pinning),
        "streams": args.streams,
        "tokens": args.tokens,
        "rate": args.rate,
        "rounds": args.rounds,
        "cpu_s_per_1000_tokens": cpu / (args.streams * args.tokens * args.rounds) * 1000,
        "mismatches": len(ledger.mismatches),
        "profile": summarize(read_collapsed(raw)),
        "raw_stacks": str(raw.relative_to(REPO)),
    }
    write_results(RESULTS, "profile", started_at, report)
    print(report_text(report))
    if ledger.mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
