"""Tracing benchmark (issue 24's "Done means"): the service's CPU with tracing on against off.

    uv run --frozen python -m benchmarks.tracing [--rounds 4] [--answers 200] ...
    (./benchmarks/run.sh runs it with the defaults, about 11 minutes on 2 cores)

Processes, all on 127.0.0.1 and up for the whole run, pinned as in
benchmarks/load.py (the services on core 0; the stub, the collector and this
load generator on core 1; when pinning is impossible the output and the JSON
say so):
- the upstream stub (benchmarks/load_stub.py);
- a collector, benchmarks/otlp_sink.py (tests/support/otlp_receiver.py in a
  process of its own: its decoding is counted in no service's CPU);
- three services, alike but for OTEL_*:
    off   no OTEL_* variable: tracing off (the baseline)
    on    OTEL_EXPORTER_OTLP_ENDPOINT at the collector: every span exported
    down  OTEL_EXPORTER_OTLP_ENDPOINT at a port where nothing listens (a
          collector that is down: every export fails and is retried)
  Everything else in OTEL_* is at the SDK's defaults (spans batched every 5 s,
  metrics every 60 s, http/protobuf, every request sampled).

Two loads, each measured `--rounds` times per service; within a round the
services take turns, in an order that rotates every round, so drift on the
shared machine hits each alike:
(1) short answers: `--answers` answers of 2 tokens, `--concurrency` at a
    time: service CPU-seconds per answer (all of an answer's set-up, which is
    where a request's spans are made);
(2) long answers: `--streams` streams at once of `--tokens` tokens at
    `--rate` tokens/s: service CPU-seconds per 1,000 tokens.
Service CPU is utime + stime from /proc (psutil), from `--settle` seconds
before a load to `--settle` seconds after it; the default settle is longer
than the span processor's 5 s schedule, so the export of a load's spans falls
in its window. "whole run" divides each service's CPU from the first measured
round to the last by everything it answered: it also holds the exports, and
the retries, that fell in another service's turn.

Every answer must end with `done` and its text must equal the stub's, byte for
byte (load.py's Ledger), and the collector must have received a server span
for every answer the `on` service gave; the run exits 1 otherwise.

Results: a table on stdout, JSON in benchmarks/results/tracing-<UTC timestamp>.json
and tracing.json (the latest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import uvloop
from tests.support.otlp_receiver import down_endpoint
from tests.support.service import run_services

from benchmarks.load import (
    LOAD_CORE,
    RESULTS,
    SERVICE_CORE,
    Ledger,
    Stream,
    Target,
    ask_helper,
    core_busy_seconds,
    git_commit,
    one_stream,
    pieces,
    pin_load_generator,
    record_affinity,
    report_end,
    run_helper,
    run_stub,
    service_settings,
    spawned_on,
)
from benchmarks.measure import cpu_seconds, write_results
from benchmarks.tracing_profile import profile_loads, profile_text

MARKERS = {"short": "mk-trace-short", "long": "mk-trace-long"}
SHORT_PIECES = ["Hi", "."]
# The span the ASGI instrumentation makes for each GET /ai_write: one per answer.
SERVER_SPAN = "GET /ai_write"
# How long the collector may take to show the last answers' spans.
SPANS_DEADLINE = 30.0


# ---------------------------------------------------------------- the collector


class Sink:
    """benchmarks/otlp_sink.py: `counts()` is what it has received so far."""

    def __init__(self, process: subprocess.Popen[str], endpoint: str) -> None:
        self.process = process
        self.endpoint = endpoint

    def counts(self) -> dict[str, Any]:
        return dict(json.loads(ask_helper(self.process, "")))

    def wait_for_server_spans(self, count: int, timeout: float) -> dict[str, Any]:
        """The counts once `count` server spans have arrived, or at `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            if counts["spans"].get(SERVER_SPAN, 0) >= count or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)


@contextmanager
def run_sink() -> Iterator[Sink]:
    with run_helper("benchmarks.otlp_sink") as (process, endpoint):
        yield Sink(process, endpoint)


# ---------------------------------------------------------------- loads


@dataclass
class Service:
    target: Target
    # Per load ("short", "long"): one dict per round.
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"short": [], "long": []})
    answers: int = 0


async def short_answers(target: Target, tag: str, count: int, concurrency: int) -> list[Stream]:
    """`count` 2-token answers, `concurrency` at a time, each a question of its own."""
    questions = iter(range(count))
    streams: list[Stream] = []

    async def worker() -> None:
        for n in questions:
            question = f"{MARKERS['short']}-{tag}-{n}"
            streams.append(await one_stream(target, "short", question))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return streams


async def long_answers(target: Target, tag: str, count: int) -> list[Stream]:
    """`count` long answers at once."""
    questions = [f"{MARKERS['long']}-{tag}-{n}" for n in range(count)]
    return list(await asyncio.gather(*(one_stream(target, "long", q) for q in questions)))


async def measured(
    service: Service, load: str, tag: str, ledger: Ledger, args: argparse.Namespace
) -> None:
    """One load on one service: its CPU over the load and the settles around it."""
    target = service.target
    await asyncio.sleep(args.settle)
    cpu0, cores0, wall0 = cpu_seconds(target.pid), core_busy_seconds(), time.perf_counter()
    if load == "short":
        streams = await short_answers(target, tag, args.answers, args.concurrency)
    else:
        streams = await long_answers(target, tag, args.streams)
    load_s = time.perf_counter() - wall0
    await asyncio.sleep(args.settle)
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(target.pid) - cpu0
    ledger.check(streams, load)
    service.answers += len(streams)
    busy = 0.0
    if len(cores0) > SERVICE_CORE:
        busy = (core_busy_seconds()[SERVICE_CORE] - cores0[SERVICE_CORE]) / wall
    done = [s for s in streams if s.outcome == "done"]
    durations = sorted(s.duration for s in done if s.duration is not None)
    service.runs[load].append(
        {
            "cpu_s": cpu,
            "answers": len(done),
            "tokens": len(done) * (len(SHORT_PIECES) if load == "short" else args.tokens),
            "pieces": sum(s.pieces for s in done),
            "load_s": load_s,
            "answer_s_median": statistics.median(durations) if durations else None,
            # Everything the service core did, this service's CPU included, over the window.
            "service_core_busy": busy,
        }
    )


def cost(run: dict[str, Any], load: str) -> float:
    """CPU-s per answer (short) or per 1,000 tokens (long)."""
    if load == "short":
        return float(run["cpu_s"] / run["answers"])
    return float(run["cpu_s"] / run["tokens"] * 1000)


def summarise(services: dict[str, Service], load: str) -> dict[str, Any]:
    unit = "cpu_s_per_answer" if load == "short" else "cpu_s_per_1000_tokens"
    result: dict[str, Any] = {"unit": unit}
    for name, service in services.items():
        runs = service.runs[load]
        pooled = {k: sum(r[k] for r in runs) for k in ("cpu_s", "answers", "tokens", "pieces")}
        result[name] = {
            unit: cost(pooled, load),
            f"{unit}_each_round": [cost(r, load) for r in runs],
            "pieces_per_answer": pooled["pieces"] / max(1, pooled["answers"]),
            "answer_s_median_each_round": [r["answer_s_median"] for r in runs],
            "service_core_busy_max": max(r["service_core_busy"] for r in runs),
            "runs": runs,
        }
    off = result["off"]
    for name in services:
        if name == "off":
            continue
        each = [
            cost(a, load) / cost(b, load)
            for a, b in zip(services[name].runs[load], services["off"].runs[load], strict=True)
        ]
        result[f"{name}_to_off"] = {
            "pooled": result[name][unit] / off[unit],
            "median_of_rounds": statistics.median(each),
            "min": min(each),
            "max": max(each),
            "each_round": each,
        }
    return result


async def profile(
    services: dict[str, Service],
    loads: list[str],
    ledger: Ledger,
    args: argparse.Namespace,
    stamp: str,
) -> dict[str, Any]:
    """The loads once more on `off` and `on`, under py-spy (tracing_profile.py)."""

    async def short(target: Target) -> float:
        streams = await short_answers(
            target, f"{args.nonce}-profile", args.answers, args.concurrency
        )
        ledger.check(streams, "short")
        services[target.name].answers += len(streams)
        await asyncio.sleep(args.settle)  # the export of these spans
        return float(len(streams))

    async def long(target: Target) -> float:
        streams = await long_answers(target, f"{args.nonce}-profile", args.streams)
        ledger.check(streams, "long")
        services[target.name].answers += len(streams)
        await asyncio.sleep(args.settle)
        return len(streams) * args.tokens / 1000

    runs = {"short": short, "long": long}
    targets = {name: services[name].target for name in ("off", "on")}
    return await profile_loads(
        targets, {load: runs[load] for load in loads}, RESULTS / f"tracing-{stamp}"
    )


def spans_dropped(url: str) -> float | None:
    """The service's qa_otel_spans_dropped_total, from its /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("qa_otel_spans_dropped_total"):
            return float(line.split()[-1])
    return None


# ---------------------------------------------------------------- report


def report_text(report: dict[str, Any]) -> str:
    args = report["args"]
    lines = [
        f"\nTracing: {args['rounds']} rounds, services in turn (order rotating);"
        f" settle {args['settle']} s around each load",
        f"  pinning: {'ok' if report['pinning']['ok'] else 'NOT PINNED'}"
        f" ({report['pinning']['detail']})",
    ]
    titles = {
        "short": f"(1) {args['answers']} answers of 2 tokens, {args['concurrency']} at a time",
        "long": f"(2) {args['streams']} streams at once x {args['tokens']} tokens"
        f" at {args['rate']:g} tokens/s",
    }
    for load, title in titles.items():
        part = report["loads"].get(load)
        if part is None:
            continue
        unit = part["unit"]
        scale, shown = (1000, "CPU-ms/answer") if load == "short" else (1, "CPU-s/1k tokens")
        lines += [
            f"\n{title}",
            f"  {'':6} {shown:>15} {'rounds':>28} {'to off: pooled, median [range]':>34}",
        ]
        for name in report["services"]:
            row = part[name]
            rounds = ", ".join(f"{v * scale:.3f}" for v in row[f"{unit}_each_round"])
            ratio = part.get(f"{name}_to_off")
            against = (
                f"{ratio['pooled']:.3f}, {ratio['median_of_rounds']:.3f}"
                f" [{ratio['min']:.3f}-{ratio['max']:.3f}]"
                if ratio
                else ""
            )
            lines.append(f"  {name:6} {row[unit] * scale:15.3f} {rounds:>28} {against:>34}")
        lines.append(
            "  pieces per answer: "
            + ", ".join(f"{n} {part[n]['pieces_per_answer']:.1f}" for n in report["services"])
            + "; service core busy, max: "
            + ", ".join(f"{n} {part[n]['service_core_busy_max']:.0%}" for n in report["services"])
        )
    whole = report["whole_run"]
    lines.append(
        "\nwhole run, service CPU-s: "
        + ", ".join(f"{n} {w['cpu_s']:.2f}" for n, w in whole.items())
        + "; to off: "
        + ", ".join(f"{n} {w['to_off']:.3f}" for n, w in whole.items() if n != "off")
    )
    spans = report["collector"]
    lines.append(
        f"collector: {spans['server_spans']} server spans for {spans['answers_on']} answers;"
        f" {spans['spans_per_answer']:.2f} spans an answer"
        f" ({', '.join(f'{k} {v}' for k, v in spans['spans'].items())});"
        f" {spans['bytes_per_answer']:.0f} bytes an answer"
    )
    if "profile" in report:
        lines += profile_text(report["profile"])
    if "down_spans_dropped" in report:
        lines.append(f"down: {report['down_spans_dropped']:.0f} spans dropped (its /metrics)")
    lines += report_end(report)
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=4, help="rounds per service and load")
    parser.add_argument("--answers", type=int, default=200, help="(1) short answers a round")
    parser.add_argument("--concurrency", type=int, default=20, help="(1) short answers at once")
    parser.add_argument("--streams", type=int, default=100, help="(2) long streams at once")
    parser.add_argument("--tokens", type=int, default=500, help="(2) tokens per long stream")
    parser.add_argument("--rate", type=float, default=50.0, help="(2) tokens/s per stream")
    parser.add_argument(
        "--settle", type=float, default=6.0, help="quiet seconds before and after each load"
    )
    parser.add_argument(
        "--no-down", action="store_true", help="leave out the collector-down service"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy on off and on, after")
    parser.add_argument("--loads", default="short,long", help="which loads (default short,long)")
    args = parser.parse_args(argv)
    args.nonce = f"{int(time.time())}"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started_wall, started_at = time.perf_counter(), datetime.now(UTC)
    report: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "args": vars(args),
        "git": git_commit(),
        "machine": {"cpu_count": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
        "loads": {},
    }
    # 100 streams are 300+ sockets in each service: lift the soft limit.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pinning = pin_load_generator(
        f"services on core {SERVICE_CORE}; stub, collector and load generator on {LOAD_CORE}"
    )
    spec = {
        MARKERS["short"]: {"pieces": SHORT_PIECES, "first_delay": 0.0, "piece_delay": 0.0},
        MARKERS["long"]: {
            "pieces": pieces(args.tokens),
            "first_delay": 0.05,
            "piece_delay": 1 / args.rate,
        },
    }
    ledger = Ledger({load: "".join(spec[marker]["pieces"]) for load, marker in MARKERS.items()})
    loads = args.loads.split(",")
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stub_url, stub_pid = stack.enter_context(run_stub(spec))
        sink = stack.enter_context(run_sink())
        base = service_settings(stub_url)
        otel = {
            "off": {},
            "on": {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint},
            "down": {"OTEL_EXPORTER_OTLP_ENDPOINT": down_endpoint()},
        }
        if args.no_down:
            del otel["down"]
        with spawned_on(SERVICE_CORE, pinning):
            running = stack.enter_context(
                run_services([{**base, **extra} for extra in otel.values()], workdir)
            )
        services = {
            name: Service(Target(name, one.url, one.process.pid, "service"))
            for name, one in zip(otel, running, strict=True)
        }
        report["services"] = list(services)
        for name, service in services.items():
            record_affinity(name, service.target.pid, pinning)
        record_affinity("stub", stub_pid, pinning)
        record_affinity("load_generator", os.getpid(), pinning)

        answered_before: dict[str, int] = {}
        cpu_before: dict[str, float] = {}
        answered_after: dict[str, int] = {}
        cpu_after: dict[str, float] = {}

        async def run_all() -> None:
            # Warm-up: each service's first answers (imports, connections) are not measured.
            for service in services.values():
                for streams, load in (
                    (await short_answers(service.target, "warm", 40, 10), "short"),
                    (await long_answers(service.target, "warm", 10), "long"),
                ):
                    ledger.check(streams, load)
                    service.answers += len(streams)
            # `whole_run` starts here, after the warm-up.
            for name, service in services.items():
                answered_before[name] = service.answers
                cpu_before[name] = cpu_seconds(service.target.pid)
            names = list(services)
            for round_ in range(args.rounds):
                turn = names[round_ % len(names) :] + names[: round_ % len(names)]
                for load in loads:
                    for name in turn:
                        tag = f"{args.nonce}-{name}-r{round_}"
                        await measured(services[name], load, tag, ledger, args)
            # `whole_run` ends here, before the profile's loads.
            for name, service in services.items():
                answered_after[name] = service.answers
                cpu_after[name] = cpu_seconds(service.target.pid)
            if args.profile:
                stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
                report["profile"] = await profile(services, loads, ledger, args, stamp)

        try:
            uvloop.run(run_all())
        except (KeyboardInterrupt, RuntimeError, OSError) as exc:
            report["unfinished"] = f"{type(exc).__name__}: {exc}"
        answers_on = services["on"].answers
        counts = sink.wait_for_server_spans(answers_on, SPANS_DEADLINE)
        if "down" in services:
            report["down_spans_dropped"] = spans_dropped(services["down"].target.url)
    for load in loads:
        rounds = {len(service.runs[load]) for service in services.values()}
        if len(rounds) == 1 and 0 not in rounds:  # a round every service finished
            report["loads"][load] = summarise(services, load)
    whole: dict[str, dict[str, Any]] = {
        name: {
            "cpu_s": cpu_after[name] - cpu_before[name],
            "answers": answered_after[name] - answered_before[name],
        }
        for name in cpu_after  # empty if the rounds did not finish
    }
    for row in whole.values():
        row["to_off"] = row["cpu_s"] / whole["off"]["cpu_s"] if whole["off"]["cpu_s"] else None
    report["whole_run"] = whole
    server_spans = counts["spans"].get(SERVER_SPAN, 0)
    report["collector"] = {
        "answers_on": answers_on,
        "server_spans": server_spans,
        "spans": counts["spans"],
        "spans_per_answer": sum(counts["spans"].values()) / max(1, answers_on),
        "exports": counts["exports"],
        "bytes_per_answer": counts["bytes"] / max(1, answers_on),
    }
    report["pinning"] = vars(pinning)
    report["exactness"] = ledger.summary()
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["wall_s"] = time.perf_counter() - started_wall
    write_results(RESULTS, "tracing", started_at, report)
    print(report_text(report))
    if ledger.mismatches or server_spans < answers_on or report.get("unfinished"):
        sys.exit(1)


if __name__ == "__main__":
    main()
