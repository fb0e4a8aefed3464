"""The provider connection: pool, TLS, HTTP/2 and the aiohttp transport, against main, in one run.

    uv run --frozen python -m benchmarks.transport [--burst 200] [--streams 100] [--rounds 3]

One upstream, tests/support/tls_upstream.py (hypercorn: HTTPS with h2 or
HTTP/1.1 by ALPN, and plain HTTP; connections kept alive as a provider's edge
keeps them, and counted), and these services, each its own process, every
setting at its default but the stub's URL (and the CA, trusted through
SSL_CERT_FILE):

- `base_https`, `base_http`: main before issue 25 (`--baseline-src`, the
  exported 94bbced tree): httpx, no pool bound, 100 idle connections kept 5 s;
- `https`, `http`: this tree: the bounded pool, 10 idle connections kept
  60 s, one connection warmed at start-up;
- `https_idle100`: the same with 100 idle connections kept (main's count);
- `h2`: this tree with httpx's HTTP/2 (`http2=True`);
- `aiohttp`: this tree over httpx-aiohttp's transport (the openai SDK's
  `DefaultAioHttpClient`).

The last two are swapped in by benchmarks/upstream_variants/sitecustomize.py,
in those processes only. Pinning and exactness as in benchmarks/load.py (its
Ledger checks every stream's text byte for byte).

Scenarios, targets interleaved round by round:
- burst: `--burst` answers of 2 tokens started at once: time to first text
  p50/p99, the service's CPU per answer (the start-up cost), and how many new
  connections the stub saw during the burst (so, for HTTPS, TLS handshakes);
  TLS's CPU is read as https minus http, per connection opened;
- load: `--streams` streams of `--tokens` tokens at `--rate` tokens/s: CPU-s
  per 1,000 tokens and time to first text;
- first: `--restarts` fresh starts of base_https and https, one answer each
  as soon as the service is ready: its time to first text (what the start-up
  warm-up saves).

Results: a table on stdout, JSON in benchmarks/results/transport-<timestamp>.json
and transport.json, with the machine's load at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from tests.support.service import REPO, RunningService, run_service

from benchmarks.load import (
    FAKE_KEY,
    LOAD_CORE,
    SERVICE_CORE,
    START_DEADLINE,
    Ledger,
    Target,
    burst,
    core_busy_seconds,
    own_cpu,
    pieces,
    pin_load_generator,
    record_affinity,
    report_start,
    spawned_on,
    stop,
    wait_line,
)
from benchmarks.measure import BASELINE_SRC, cpu_seconds, percentile, source_tree, write_results

RESULTS = REPO / "benchmarks" / "results"
VARIANTS = REPO / "benchmarks" / "upstream_variants"
MARKERS = {"short": "mk-short", "load": "mk-load"}
# name -> (scheme, source tree: "base" or "now", client variant or None, settings)
TARGETS: dict[str, tuple[str, str, str | None, dict[str, str]]] = {
    "base_https": ("https", "base", None, {}),
    "base_http": ("http", "base", None, {}),
    "https": ("https", "now", None, {}),
    "http": ("http", "now", None, {}),
    # Today's pool keeping as many idle connections as main did.
    "https_idle100": ("https", "now", None, {"QA_UPSTREAM_MAX_IDLE_CONNECTIONS": "100"}),
    "h2": ("https", "now", "http2", {}),
    "aiohttp": ("https", "now", "aiohttp", {}),
}


class Upstream:
    """The TLS stub's process: its URLs, and the connections it has counted."""

    def __init__(self, process: subprocess.Popen[str], https_port: int, http_port: int) -> None:
        self.process = process
        self.urls = {
            "https": f"https://127.0.0.1:{https_port}",
            "http": f"http://127.0.0.1:{http_port}",
        }

    def counts(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        result: dict[str, Any] = json.loads(wait_line(self.process, START_DEADLINE))
        return result


@contextmanager
def run_upstream(directory: Path, spec: dict[str, Any]) -> Iterator[Upstream]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.tls_upstream", str(directory), json.dumps(spec)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        https_port, http_port = map(int, wait_line(process, START_DEADLINE).split())
        yield Upstream(process, https_port, http_port)
    finally:
        stop(process)


def settings_for(
    name: str, upstream: Upstream, ca_file: Path, baseline_src: Path
) -> dict[str, str]:
    scheme, tree, variant, extra = TARGETS[name]
    settings = {
        **extra,
        "QA_PROVIDER": "openai",
        "OPENAI_API_KEY": FAKE_KEY,
        "OPENAI_BASE_URL": f"{upstream.urls[scheme]}/v1",
        "SSL_CERT_FILE": str(ca_file),
        "QA_UPSTREAM_MAX_RETRIES": "0",
        "QA_LOG_LEVEL": "warning",
    }
    if tree == "base":
        settings["PYTHONPATH"] = str(baseline_src)
    if variant is not None:
        settings["PYTHONPATH"] = str(VARIANTS)
        settings["QA_BENCH_UPSTREAM_CLIENT"] = variant
    return settings


def connections_opened(before: dict[str, Any], after: dict[str, Any]) -> int:
    return sum(after["connections"].values()) - sum(before["connections"].values())


async def measure_round(
    target: Target, upstream: Upstream, ledger: Ledger, scenario: str, count: int
) -> dict[str, Any]:
    marker_key = "short" if scenario == "burst" else "load"
    counts0, cpu0, cores0 = upstream.counts(), cpu_seconds(target.pid), core_busy_seconds()
    own0, stub0, wall0 = own_cpu(), cpu_seconds(upstream.process.pid), time.perf_counter()
    done = await burst(target, scenario, MARKERS[marker_key], count)
    await asyncio.sleep(0.5)  # work the process does after the last byte
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(target.pid) - cpu0
    load_core = cpu_seconds(upstream.process.pid) - stub0 + own_cpu() - own0
    cores = [b - a for a, b in zip(cores0, core_busy_seconds(), strict=True)]
    ours = {SERVICE_CORE: cpu, LOAD_CORE: load_core}
    ledger.check(done, marker_key)
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "complete": sum(s.outcome == "done" for s in done),
        "connections_opened": connections_opened(counts0, upstream.counts()),
        "ttfts": [s.ttft for s in done if s.ttft is not None],
        "load_core_busy": load_core / wall,
        "foreign_busy": {
            f"core{core}": max(0.0, cores[core] - ours[core]) / wall
            for core in (SERVICE_CORE, LOAD_CORE)
            if core < len(cores)
        },
    }


def summarise(runs: list[dict[str, Any]], per: str, tokens: int) -> dict[str, Any]:
    ttfts = [t for r in runs for t in r["ttfts"]]
    complete = sum(r["complete"] for r in runs)
    cpu_per = [r["cpu_s"] / max(1, r["complete"]) for r in runs]
    result: dict[str, Any] = {
        "rounds": len(runs),
        "complete": complete,
        "ttft_p50_ms": percentile(ttfts, 0.5) * 1000 if ttfts else None,
        "ttft_p99_ms": percentile(ttfts, 0.99) * 1000 if ttfts else None,
        "connections_opened_per_round": [r["connections_opened"] for r in runs],
        "foreign_busy_max": max(v for r in runs for v in r["foreign_busy"].values()),
        "load_core_busy_max": max(r["load_core_busy"] for r in runs),
        "cpu_s_per_round": [r["cpu_s"] for r in runs],
    }
    if per == "answer":
        result["cpu_ms_per_answer_median"] = statistics.median(cpu_per) * 1000
        result["cpu_ms_per_answer_spread"] = [min(cpu_per) * 1000, max(cpu_per) * 1000]
    else:
        per_1000 = [c / tokens * 1000 for c in cpu_per]
        result["cpu_s_per_1000_tokens_median"] = statistics.median(per_1000)
        result["cpu_s_per_1000_tokens_spread"] = [min(per_1000), max(per_1000)]
    return result


async def scenario(
    targets: list[Target],
    upstream: Upstream,
    ledger: Ledger,
    name: str,
    count: int,
    rounds: int,
    tokens: int,
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for target in targets:  # warm-up: imports, caches, a first connection or two
        ledger.check(await burst(target, f"{name}_warmup", MARKERS["short"], 4), "short")
    for _ in range(rounds):
        for target in targets:
            runs[target.name].append(await measure_round(target, upstream, ledger, name, count))
    per = "answer" if name == "burst" else "tokens"
    result = {t: summarise(r, per, tokens) for t, r in runs.items()}
    result["count"] = count
    return result


def first_answers(
    upstream: Upstream, ca_file: Path, baseline_src: Path, workdir: Path, restarts: int
) -> dict[str, Any]:
    """Time to first text of the first answer after a start, base_https against https."""
    samples: dict[str, list[float]] = {"base_https": [], "https": []}
    ledger = Ledger({"short": "".join(pieces(2))})
    for _ in range(restarts):
        for name in samples:
            settings = settings_for(name, upstream, ca_file, baseline_src)
            with spawned_on(SERVICE_CORE, PINNING), run_service(settings, workdir) as service:
                pass_target = Target(name, service.url, service.process.pid, "service")
                (stream,) = uvloop.run(burst(pass_target, "first", MARKERS["short"], 1))
            ledger.check([stream], "short")
            if stream.ttft is not None:
                samples[name].append(stream.ttft)
    return {
        name: {
            "restarts": len(values),
            "ttft_median_ms": statistics.median(values) * 1000 if values else None,
            "ttft_spread_ms": [min(values) * 1000, max(values) * 1000] if values else None,
        }
        for name, values in samples.items()
    } | {"exactness": ledger.summary()}


PINNING = pin_load_generator(
    f"services on core {SERVICE_CORE}, the TLS stub and the load generator on {LOAD_CORE}"
)


def check_variant(service: RunningService, variant: str | None) -> None:
    if variant is not None and f"benchmark upstream client: {variant}" not in service.logs():
        raise RuntimeError(f"the {variant} variant was not applied (see {service.log_path})")


def report_text(report: dict[str, Any]) -> str:
    lines = [f"transport benchmark, {report['started_at']}, python {report['machine']['python']}"]
    for key, unit in (("burst", "cpu_ms_per_answer"), ("load", "cpu_s_per_1000_tokens")):
        result = report["scenarios"].get(key)
        if not result:
            continue
        lines.append(f"\n{key} ({result['count']} at once)")
        lines.append(f"{'target':12} {unit + ' (spread)':34} {'p50 ms':>8} {'p99 ms':>8}  opened")
        for name in TARGETS:
            row = result.get(name)
            if row is None:
                continue
            median, spread = row[f"{unit}_median"], row[f"{unit}_spread"]
            lines.append(
                f"{name:12} {median:8.3f} ({spread[0]:.3f}-{spread[1]:.3f}){'':12} "
                f"{row['ttft_p50_ms']:8.0f} {row['ttft_p99_ms']:8.0f}  "
                f"{row['connections_opened_per_round']}"
            )
    first = report["scenarios"].get("first")
    if first:
        lines.append("\nfirst answer after a start, time to first text (median, spread)")
        for name in ("base_https", "https"):
            row = first[name]
            lines.append(f"{name:12} {row['ttft_median_ms']:.1f} ms {row['ttft_spread_ms']}")
    lines.append(f"\nexactness: {report['exactness']['mismatches']} mismatches")
    lines.append(f"load average start {report['machine']['loadavg_start']}, end "
                 f"{report['machine']['loadavg_end']}")  # fmt: skip
    lines.append(f"written to {report['written_to']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--scenarios", default="burst,load,first")
    parser.add_argument(
        "--baseline-src", type=source_tree, default=str(BASELINE_SRC),
        help="main before issue 25, exported (git archive 94bbced src)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started_at = datetime.now(UTC)
    report = report_start(
        args,
        started_at,
        targets={name: TARGETS[name] for name in args.targets.split(",")},
        scenarios={},
    )
    spec = {
        MARKERS["short"]: {"pieces": pieces(2), "first_delay": 0.05, "piece_delay": 0.0},
        MARKERS["load"]: {
            "pieces": pieces(args.tokens),
            "first_delay": 0.05,
            "piece_delay": 1 / args.rate,
        },
    }
    ledger = Ledger({key: "".join(spec[m]["pieces"]) for key, m in MARKERS.items()})
    wanted = set(args.scenarios.split(","))
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ExitStack() as stack:
        certs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        upstream = stack.enter_context(run_upstream(certs, spec))
        record_affinity("stub", upstream.process.pid, PINNING)
        record_affinity("load_generator", os.getpid(), PINNING)
        ca_file = certs / "ca.pem"
        if wanted - {"first"}:
            targets = []
            for name in args.targets.split(","):
                settings = settings_for(name, upstream, ca_file, args.baseline_src)
                with spawned_on(SERVICE_CORE, PINNING):
                    service = stack.enter_context(run_service(settings, workdir))
                check_variant(service, TARGETS[name][2])
                record_affinity(name, service.process.pid, PINNING)
                targets.append(Target(name, service.url, service.process.pid, "service"))
            for key, count, tokens in (
                ("burst", args.burst, 2),
                ("load", args.streams, args.tokens),
            ):
                if key in wanted:
                    report["scenarios"][key] = uvloop.run(
                        scenario(targets, upstream, ledger, key, count, args.rounds, tokens)
                    )
        if "first" in wanted:
            report["scenarios"]["first"] = first_answers(
                upstream, ca_file, args.baseline_src, workdir, args.restarts
            )
    report["pinning"] = vars(PINNING)
    report["exactness"] = ledger.summary()
    first_exactness = report["scenarios"].get("first", {}).get("exactness", {})
    report["exactness"]["mismatches"] += first_exactness.get("mismatches", 0)
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["wall_s"] = time.perf_counter() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_results(RESULTS, "transport", started_at, report)
    print(report_text(report))
    if report["exactness"]["mismatches"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
