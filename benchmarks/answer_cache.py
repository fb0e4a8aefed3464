"""Answer cache benchmark (issue 22's "Done means"): hits against misses, in one run, one stub.

    .venv/bin/python -m benchmarks.answer_cache            # the in-process store
    .venv/bin/python -m benchmarks.answer_cache --redis    # the same on a local redis-server

Processes, all on 127.0.0.1 and up for the whole run, pinned as in
benchmarks/load.py (the services on core 0; the stub, redis-server and this load
generator on core 1; when pinning is impossible the output and the JSON say so):
- the upstream stub (benchmarks/load_stub.py `--count-requests`: it counts the
  requests that carry a question, so upstream calls are counted where they land);
- `cached`: the service with QA_ANSWER_CACHE_TTL_SECONDS=3600;
- `uncached`: the same service with the cache off (the reference column);
- with `--redis`, a redis-server both services use (QA_REDIS_URL: the answer
  log and the cache live there).
Every client is 127.0.0.1, one client under the default `client` scope.

Parts:
1. Time to first text at one stream, `--single-samples` sequential requests
   each, targets interleaved so drift hits each alike: the stub itself, the
   uncached service, a cached miss (a distinct question each time), and a
   cached hit (one question asked once before, repeated). Median and p90; the
   figure is hit / miss.
2. Service CPU seconds (utime + stime from /proc, psutil) per 1,000 tokens at
   `--streams` concurrent streams of `--tokens` tokens at `--rate` tokens/s,
   `--rounds` rounds. Each round: `--streams` distinct questions on the
   uncached service; `--streams` distinct new questions on the cached one
   (misses: the path a miss takes with the cache on); those same questions
   again (hits, replayed at once); and hits of `--streams` answers recorded
   before the rounds, ten at a time (`hit_solo`). Tokens are the stub's: each
   counted stream's text is checked whole, so it carried them all. The text
   pieces counted from the streams are beside them, because they differ: a
   busy service reads a provider's stream ahead and sends what has arrived as
   one piece (generation/batching.py), 200 tokens in 6 to 70 pieces at 100
   streams on a shared machine, and a recording keeps those pieces. So a hit
   of those misses replays few pieces, and `hit_solo` (about one piece a
   token) is the hit's worst case: its CPU goes by the piece. The figure is hit
   / miss per 1,000 tokens, per round and pooled; the issue's target is at
   most 0.2.
3. A burst of `--burst` identical questions at once, `--burst-rounds` times (a
   new question each time) against a slower reply (first text after 0.5 s):
   upstream calls the stub saw against streams served, and what each stream's
   meta said (miss, join, hit). The same burst once on the uncached service.

Every stream must end with `done` and its text must equal the stub's, byte for
byte (load.py's Ledger); every stream's meta must say the outcome its part
expects (`cache`: miss or hit); each burst of part 3 must make one upstream
call and have one miss. The run exits 1 otherwise.

`--service-src DIR` runs both services from another `src/` (a fix under trial).
`--profile` adds, after the measured parts, py-spy on the cached service
through three more rounds of hits (of answers recorded ten at a time) and one
of misses (not counted in part 2), summarised as benchmarks/profile.py does,
with the share of each layer a hit goes through (LAYERS), hits and misses side
by side.

Results: a table on stdout, JSON in benchmarks/results/answer_cache-<store>-<UTC
timestamp>.json and answer_cache-<store>.json (the latest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from tests.support.redis_server import run_redis
from tests.support.service import REPO, run_services

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
    run_helper,
    service_settings,
    spawned_on,
)
from benchmarks.measure import cpu_seconds, percentile, write_results
from benchmarks.profile import read_collapsed, summarize
from benchmarks.redis_log_profile import recording

# One reply per part; a question carries its part's marker and a suffix of its own.
MARKERS = {
    "ttft": "mk-cache-ttft",
    "load": "mk-cache-load",
    "solo": "mk-cache-solo",
    "burst": "mk-cache-burst",
}
# Part 2's answers recorded unmerged are asked this many at a time.
SOLO_AT_ONCE = 10
# The bar: a hit costs at most this share of a miss's CPU per token.
TARGET_RATIO = 0.2
CACHE_TTL_SECONDS = "3600"


# ---------------------------------------------------------------- processes


class CountingStub:
    """load_stub.py with `--count-requests`: `calls(text)` is how many requests carried `text`."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    def calls(self, text: str) -> int:
        return int(ask_helper(self.process, text))


@contextmanager
def run_counting_stub(spec: dict[str, Any]) -> Iterator[CountingStub]:
    with run_helper("benchmarks.load_stub", json.dumps(spec), "--count-requests") as (
        process,
        url,
    ):
        yield CountingStub(process, url)


# ---------------------------------------------------------------- streams


@dataclass
class Asked:
    """One stream, and what its meta said the cache did."""

    stream: Stream
    cache: str | None


async def ask(target: Target, scenario: str, question: str) -> Asked:
    said: list[str | None] = []

    def on_event(event: dict[str, Any]) -> None:
        if "meta" in event:
            said.append(event["meta"].get("cache"))

    stream = await one_stream(target, scenario, question, on_event=on_event)
    return Asked(stream, said[0] if said else None)


async def ask_all(target: Target, scenario: str, questions: list[str]) -> list[Asked]:
    return list(await asyncio.gather(*(ask(target, scenario, q) for q in questions)))


class Checks:
    """Exactness (the Ledger) and each stream's cache outcome against its part's."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.wrong_outcomes: Counter[str] = Counter()

    def check(self, asked: list[Asked], part: str, expected: str | None) -> None:
        self.ledger.check([a.stream for a in asked], part)
        for one in asked:
            if expected is not None and one.cache != expected:
                self.wrong_outcomes[f"{one.stream.scenario}: {one.cache} for {expected}"] += 1


# ---------------------------------------------------------------- part 1


async def first_text(
    stub: Target, uncached: Target, cached: Target, checks: Checks, args: argparse.Namespace
) -> dict[str, Any]:
    marker = MARKERS["ttft"]
    repeated = f"{marker}-{args.nonce}-repeated"
    checks.check([await ask(cached, "ttft_first", repeated)], "ttft", "miss")
    ttfts: dict[str, list[float]] = {"stub": [], "uncached": [], "miss": [], "hit": []}
    warmup = 3
    for index in range(warmup + args.single_samples):
        fresh = f"{marker}-{args.nonce}-{index}"
        checks.ledger.check([stream := await one_stream(stub, "ttft_stub", marker)], "ttft")
        if index >= warmup and stream.ttft is not None:
            ttfts["stub"].append(stream.ttft)
        for name, target, question, expected in (  # interleaved, one at a time
            ("uncached", uncached, fresh, None),
            ("miss", cached, fresh, "miss"),
            ("hit", cached, repeated, "hit"),
        ):
            asked = await ask(target, f"ttft_{name}", question)
            checks.check([asked], "ttft", expected)
            stream = asked.stream
            if index >= warmup and stream.ttft is not None:
                ttfts[name].append(stream.ttft)
    result: dict[str, Any] = {"samples": args.single_samples}
    for name, values in ttfts.items():
        result[name] = {
            "median_ms": statistics.median(values) * 1000,
            "p90_ms": percentile(values, 0.9) * 1000,
        }
    result["hit_to_miss_median"] = result["hit"]["median_ms"] / result["miss"]["median_ms"]
    result["hit_to_miss_p90"] = result["hit"]["p90_ms"] / result["miss"]["p90_ms"]
    return result


# ---------------------------------------------------------------- part 2


async def measured_burst(
    target: Target, scenario: str, questions: list[str], settle: float, others: list[int]
) -> tuple[list[Asked], dict[str, Any]]:
    """`questions` at once; the target's CPU over the burst and `settle` seconds after it
    (the work it does after the last byte), and other jobs' share of the service core."""
    await asyncio.sleep(settle)
    cpu0, others0 = cpu_seconds(target.pid), sum(cpu_seconds(pid) for pid in others)
    cores0, wall0 = core_busy_seconds(), time.perf_counter()
    asked = await ask_all(target, scenario, questions)
    await asyncio.sleep(settle)
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(target.pid) - cpu0
    ours = cpu + sum(cpu_seconds(pid) for pid in others) - others0
    foreign = 0.0
    if len(cores0) > SERVICE_CORE:
        busy = core_busy_seconds()[SERVICE_CORE] - cores0[SERVICE_CORE]
        foreign = max(0.0, busy - ours) / wall
    done = [a.stream for a in asked if a.stream.outcome == "done"]
    return asked, {
        "cpu_s": cpu,
        "wall_s": wall,
        "complete": len(done),
        "pieces": sum(s.pieces for s in done),
        "foreign_busy_service_core": foreign,
    }


async def cpu_per_token(
    uncached: Target, cached: Target, checks: Checks, args: argparse.Namespace
) -> dict[str, Any]:
    marker = MARKERS["load"]
    columns = ("uncached", "miss", "hit", "hit_solo")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in columns}
    warm = [f"{marker}-{args.nonce}-warm-{i}" for i in range(4)]
    checks.check(await ask_all(uncached, "load_warmup", warm), "load", None)
    checks.check(await ask_all(cached, "load_warmup", warm), "load", "miss")
    # Asked again at once, a question may still join its finished answer (the
    # flight ends in the shared answer's bookkeeping, a Redis call or two later).
    await asyncio.sleep(args.settle)
    checks.check(await ask_all(cached, "load_warmup", warm), "load", "hit")
    # Answers recorded a few at a time, each piece its own event: what a hit
    # replays when its original was not merged by a busy service (the worst case
    # for a hit's CPU per token; the misses of 100 streams are recorded merged).
    solo = [f"{MARKERS['solo']}-{args.nonce}-{i}" for i in range(args.streams)]
    await record_unmerged(cached, checks, solo)
    # The services' CPU beside the one measured: both share the service core.
    pids = (uncached.pid, cached.pid)
    for round_ in range(args.rounds):
        fresh = [f"{marker}-{args.nonce}-r{round_}-{i}" for i in range(args.streams)]
        for name, target, questions, part, expected in (
            ("uncached", uncached, [f"{q}-u" for q in fresh], "load", None),
            ("miss", cached, fresh, "load", "miss"),
            ("hit", cached, fresh, "load", "hit"),
            ("hit_solo", cached, solo, "solo", "hit"),
        ):
            others = [pid for pid in pids if pid != target.pid]
            asked, run = await measured_burst(
                target, f"load_{name}", questions, args.settle, others
            )
            checks.check(asked, part, expected)
            # Each complete stream's text is checked whole: it carried every token.
            run["tokens"] = run["complete"] * args.tokens
            runs[name].append(run)
    result: dict[str, Any] = {
        "streams": args.streams,
        "tokens_per_stream": args.tokens,
        "rate_tokens_per_s": args.rate,
        "rounds": args.rounds,
        "target_hit_to_miss": TARGET_RATIO,
    }
    for name, rows in runs.items():
        cpu = sum(r["cpu_s"] for r in rows)
        tokens, pieces_ = sum(r["tokens"] for r in rows), sum(r["pieces"] for r in rows)
        result[name] = {
            "cpu_s": cpu,
            "tokens": tokens,
            "pieces": pieces_,
            "pieces_per_stream": pieces_ / max(1, sum(r["complete"] for r in rows)),
            "cpu_s_per_1000_tokens": cpu / tokens * 1000 if tokens else None,
            "cpu_s_per_1000_pieces": cpu / pieces_ * 1000 if pieces_ else None,
            "foreign_busy_max": max(r["foreign_busy_service_core"] for r in rows),
            "runs": rows,
        }
    for hit in ("hit", "hit_solo"):
        by_round = [
            per_1000_tokens(h) / per_1000_tokens(m)
            for h, m in zip(runs[hit], runs["miss"], strict=True)
        ]
        result[f"{hit}_to_miss"] = {
            "pooled": result[hit]["cpu_s_per_1000_tokens"]
            / result["miss"]["cpu_s_per_1000_tokens"],
            "by_round": by_round,
            "median": statistics.median(by_round),
        }
    uncached_cost = result["uncached"]["cpu_s_per_1000_tokens"]
    for name in ("miss", "hit", "hit_solo"):
        result[f"{name}_to_uncached_pooled"] = result[name]["cpu_s_per_1000_tokens"] / uncached_cost
    return result


async def record_unmerged(cached: Target, checks: Checks, questions: list[str]) -> None:
    """The solo reply to `questions`, kept by the cache, SOLO_AT_ONCE at a time."""
    for at in range(0, len(questions), SOLO_AT_ONCE):
        asked = await ask_all(cached, "solo_record", questions[at : at + SOLO_AT_ONCE])
        checks.check(asked, "solo", "miss")


def per_1000_tokens(run: dict[str, Any]) -> float:
    return float(run["cpu_s"] / run["tokens"] * 1000) if run["tokens"] else float("nan")


# ---------------------------------------------------------------- part 3


async def identical_burst(
    stub: CountingStub, uncached: Target, cached: Target, checks: Checks, args: argparse.Namespace
) -> dict[str, Any]:
    marker = MARKERS["burst"]
    rounds: list[dict[str, Any]] = []
    for round_ in range(args.burst_rounds):
        question = f"{marker}-{args.nonce}-{round_}"
        asked = await ask_all(cached, "burst", [question] * args.burst)
        checks.check(asked, "burst", None)
        outcomes = Counter(str(a.cache) for a in asked)
        calls = stub.calls(question)
        if outcomes["miss"] != 1 or calls != 1:
            checks.wrong_outcomes[f"burst: {outcomes['miss']} misses, {calls} calls, for 1"] += 1
        rounds.append(
            {
                "requests": len(asked),
                "served_exact": len(asked) - exact_failures(asked, checks.ledger, "burst"),
                "upstream_calls": calls,
                "outcomes": dict(outcomes),
            }
        )
    reference = f"{marker}-{args.nonce}-uncached"
    asked = await ask_all(uncached, "burst_uncached", [reference] * args.burst)
    checks.check(asked, "burst", None)
    return {
        "burst": args.burst,
        "rounds": rounds,
        "uncached": {
            "requests": len(asked),
            "served_exact": len(asked) - exact_failures(asked, checks.ledger, "burst"),
            "upstream_calls": stub.calls(reference),
        },
    }


def exact_failures(asked: list[Asked], ledger: Ledger, part: str) -> int:
    expected = ledger.expected[part]
    return sum(a.stream.outcome != "done" or a.stream.text != expected for a in asked)


# ---------------------------------------------------------------- profile

# Where a hit's CPU can go, each a pattern for frames anywhere on a sample's stack
# ("function (path:line)" as py-spy writes them); a sample may count in several.
LAYERS = {
    "ASGI send: uvicorn's and each middleware's send wrapper": (
        r"^(RequestResponseCycle\.send|\S*(_send|send_wrapper|sender|handle_outgoing_request))"
        r" \((uvicorn|starlette|secure|asgi_correlation_id)/"
    ),
    "sse-starlette's stream (encoding, send timeout, the send chain)": r"\(sse_starlette/",
    "the send path: either of the two above": (
        r"\(sse_starlette/|^(RequestResponseCycle\.send|\S*(_send|send_wrapper|sender"
        r"|handle_outgoing_request)) \((uvicorn|starlette|secure|asgi_correlation_id)/"
    ),
    "the answer's own log (run.py's append, the store, its wake-ups)": (
        r"\(qa_service/(answers/run|stores/)"
    ),
    "native rendering (wire/)": r"\(qa_service/wire/",
    "the cache's own code (answers/cache/: replay, recording, relay)": (
        r"\(qa_service/answers/cache/"
    ),
    "request set-up (routing, dependencies, admission)": (
        r"^(solve_dependencies|APIRoute\.handle|ai_write|admit\S*) \("
    ),
    "provider call (openai, httpx/httpcore, langchain)": (
        r"\((openai|httpcore|httpx|langchain_core|langchain_openai)/"
    ),
}


def layer_shares(stacks: Counter[tuple[str, ...]]) -> dict[str, float]:
    """Each of LAYERS' share of the samples, inclusive (anywhere on the stack)."""
    total = sum(stacks.values()) or 1
    patterns = {name: re.compile(pattern) for name, pattern in LAYERS.items()}
    return {
        name: round(
            sum(c for stack, c in stacks.items() if any(pattern.search(f) for f in stack)) / total,
            4,
        )
        for name, pattern in patterns.items()
    }


async def profile_cached(
    cached: Target, checks: Checks, args: argparse.Namespace, stamp: str
) -> dict[str, Any]:
    """py-spy on the cached service: three rounds of hits (of answers recorded unmerged,
    the hit's worst case per token), then one of misses."""
    result: dict[str, Any] = {}
    solo = [f"{MARKERS['solo']}-{args.nonce}-profile-{i}" for i in range(args.streams)]
    await record_unmerged(cached, checks, solo)
    await asyncio.sleep(args.settle)  # each flight ends (see cpu_per_token's warm-up)
    fresh = [f"{MARKERS['load']}-{args.nonce}-profile-{i}" for i in range(args.streams)]
    for name, questions, rounds, part, expected in (
        ("hit", solo, 3, "solo", "hit"),
        ("miss", fresh, 1, "load", "miss"),
    ):
        with recording({name: cached}, RESULTS / f"answer_cache-{stamp}") as files:
            await asyncio.sleep(1.0)  # py-spy attaches
            cpu0, pieces_ = cpu_seconds(cached.pid), 0
            for _ in range(rounds):
                asked = await ask_all(cached, f"profile_{name}", questions)
                checks.check(asked, part, expected)
                pieces_ += sum(a.stream.pieces for a in asked)
            await asyncio.sleep(args.settle)
            cpu = cpu_seconds(cached.pid) - cpu0
        raw = files[name]
        result[name] = {
            "cpu_s_per_1000_pieces": cpu / pieces_ * 1000 if pieces_ else None,
            "pieces_per_stream": pieces_ / (rounds * len(questions)),
            "raw_stacks": str(raw.relative_to(REPO)),
            "profile": summarize(stacks := read_collapsed(raw)),
            "layers": layer_shares(stacks),
        }
    return result


# ---------------------------------------------------------------- report


def report_text(report: dict[str, Any]) -> str:
    machine, pinning = report["machine"], report["pinning"]
    lines = [
        f"\nanswer cache benchmark ({report['store']} store)  {report['started_at']}"
        f"  commit {report['git']['commit'][:10]}{' (dirty)' if report['git']['dirty'] else ''}",
        f"  src {report['args']['service_src'] or 'of this checkout'};"
        f" load average {' '.join(f'{x:.2f}' for x in machine['loadavg_start'])} at start,"
        f" {' '.join(f'{x:.2f}' for x in machine['loadavg_end'])} at end;"
        f" pinning {'ok' if pinning['ok'] else 'NOT PINNED'} ({pinning['detail']})",
    ]
    if ttft := report["parts"].get("first_text"):
        lines += [
            f"\n1. time to first text at 1 stream, ms ({ttft['samples']} sequential each)",
            f"  {'':16} {'median':>8} {'p90':>8}",
        ]
        for name in ("stub", "uncached", "miss", "hit"):
            row = ttft[name]
            lines.append(f"  {name:16} {row['median_ms']:8.1f} {row['p90_ms']:8.1f}")
        lines.append(
            f"  hit / miss: median {ttft['hit_to_miss_median']:.3f},"
            f" p90 {ttft['hit_to_miss_p90']:.3f}"
        )
    if cpu := report["parts"].get("cpu"):
        lines += [
            f"\n2. service CPU-s per 1,000 tokens, {cpu['streams']} concurrent streams x"
            f" {cpu['tokens_per_stream']} tokens ({cpu['rounds']} rounds; misses at"
            f" {cpu['rate_tokens_per_s']:g} tok/s, hits replayed at once)",
            f"  {'':34} {'per 1k tokens':>13} {'per 1k pieces':>13} {'pieces/stream':>13}"
            f" {'foreign max':>11}",
        ]
        for name, label in (
            ("uncached", "uncached (cache off)"),
            ("miss", "miss"),
            ("hit", "hit (of those misses)"),
            ("hit_solo", "hit (recorded 10 at a time)"),
        ):
            row = cpu[name]
            lines.append(
                f"  {label:34} {row['cpu_s_per_1000_tokens']:13.3f}"
                f" {row['cpu_s_per_1000_pieces']:13.3f}"
                f" {row['pieces_per_stream']:13.1f} {row['foreign_busy_max']:11.0%}"
            )
        for hit, label in (
            ("hit", "hit / miss"),
            ("hit_solo", "hit (recorded 10 at a time) / miss"),
        ):
            ratio = cpu[f"{hit}_to_miss"]
            verdict = "met" if ratio["pooled"] <= TARGET_RATIO else "MISSED"
            lines.append(
                f"  {label}: pooled {ratio['pooled']:.3f}, median of rounds {ratio['median']:.3f}"
                f" [{min(ratio['by_round']):.3f}-{max(ratio['by_round']):.3f}]"
                f" (at most {TARGET_RATIO}: {verdict})"
            )
        lines.append(
            "  against uncached: "
            + ", ".join(
                f"{n} {cpu[f'{n}_to_uncached_pooled']:.3f}" for n in ("miss", "hit", "hit_solo")
            )
        )
    if burst := report["parts"].get("burst"):
        lines.append(f"\n3. {burst['burst']} identical questions at once")
        for index, row in enumerate(burst["rounds"]):
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items()))
            lines.append(
                f"  round {index}: {row['upstream_calls']} upstream call(s) for"
                f" {row['requests']} requests, {row['served_exact']} exact ({outcomes})"
            )
        ref = burst["uncached"]
        lines.append(
            f"  uncached:  {ref['upstream_calls']} upstream calls for {ref['requests']} requests,"
            f" {ref['served_exact']} exact"
        )
    if profile := report["parts"].get("profile"):
        lines.append("\nprofile of the cached service (py-spy; not part 2's figures)")
        for name, row in profile.items():
            summary = row["profile"]
            lines.append(
                f"  {name}: {row['cpu_s_per_1000_pieces']:.3f} CPU-s/1k pieces profiled"
                f" ({row['pieces_per_stream']:.0f} pieces a stream),"
                f" {summary['samples']} samples ({row['raw_stacks']})"
            )
            lines.append("    self by package: " + ", ".join(
                f"{k} {v:.1%}" for k, v in list(summary["self_by_package"].items())[:8]
            ))  # fmt: skip
            lines += [
                f"    {share:6.1%}  {name} (inclusive)" for name, share in row["layers"].items()
            ]
            lines += [
                f"    {share:6.1%}  {fn}" for fn, share in list(summary["top_self"].items())[:15]
            ]
    exact = report["exactness"]
    lines.append(
        f"\nexactness: {exact['streams_checked']} streams checked,"
        f" {exact['mismatches']} mismatches;"
        f" wrong cache outcomes: {sum(report['wrong_outcomes'].values())}"
    )
    for mismatch in exact["first_mismatches"]:
        lines.append(f"  MISMATCH {mismatch}")
    for what, count in report["wrong_outcomes"].items():
        lines.append(f"  WRONG OUTCOME {what} x{count}")
    if report.get("unfinished"):
        lines.append(f"UNFINISHED: {report['unfinished']}")
    lines.append(f"wall time {report['wall_s']:.0f} s; written to {report['written_to']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", action="store_true", help="a local redis-server as the store")
    parser.add_argument("--single-samples", type=int, default=40, help="(1) samples per target")
    parser.add_argument("--streams", type=int, default=100, help="(2) concurrent streams")
    parser.add_argument("--tokens", type=int, default=200, help="(2) tokens per stream")
    parser.add_argument("--rate", type=float, default=50.0, help="(2) tokens/s per stream")
    parser.add_argument("--rounds", type=int, default=3, help="(2) rounds")
    parser.add_argument("--settle", type=float, default=0.5, help="(2) pause around each burst, s")
    parser.add_argument("--burst", type=int, default=50, help="(3) identical questions at once")
    parser.add_argument("--burst-rounds", type=int, default=3, help="(3) bursts")
    parser.add_argument("--profile", action="store_true", help="py-spy on hits and misses")
    parser.add_argument(
        "--service-src",
        type=Path,
        help="run both services from the qa_service package in this src/ directory (e.g. a"
        " fix under trial, or `git archive COMMIT src | tar -x -C DIR`)",
    )
    parser.add_argument("--parts", default="1,2,3", help="which parts to run (default 1,2,3)")
    args = parser.parse_args(argv)
    # Questions of this run only: a fresh store never holds them, and they say which run.
    args.nonce = f"{int(time.time())}"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started_wall, started_at = time.perf_counter(), datetime.now(UTC)
    store = "redis" if args.redis else "memory"
    report: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "store": store,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "git": git_commit(),
        "machine": {"cpu_count": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
        "parts": {},
    }
    # 100 streams are 300+ sockets in the cached service: lift the soft limit.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pinning = pin_load_generator(f"services on core {SERVICE_CORE}, the rest on {LOAD_CORE}")
    spec = {
        MARKERS["ttft"]: {"pieces": pieces(20), "first_delay": 0.05, "piece_delay": 0.005},
        MARKERS["load"]: {
            "pieces": pieces(args.tokens),
            "first_delay": 0.05,
            "piece_delay": 1 / args.rate,
        },
        # The same text, fast, recorded a few answers at a time (part 2's hit_solo).
        MARKERS["solo"]: {"pieces": pieces(args.tokens), "first_delay": 0.0, "piece_delay": 0.01},
        # Slow-ish: the whole burst arrives while the first answer is written.
        MARKERS["burst"]: {"pieces": pieces(100), "first_delay": 0.5, "piece_delay": 0.01},
    }
    ledger = Ledger({part: "".join(spec[m]["pieces"]) for part, m in MARKERS.items()})
    checks = Checks(ledger)
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    wanted = set(args.parts.split(","))
    with ExitStack() as stack:
        stub = stack.enter_context(run_counting_stub(spec))
        settings = service_settings(stub.url)
        if args.service_src is not None:
            settings["PYTHONPATH"] = str(args.service_src.resolve())
        if args.redis:
            settings["QA_REDIS_URL"] = stack.enter_context(run_redis(workdir)).url
        with spawned_on(SERVICE_CORE, pinning):
            uncached_service, cached_service = stack.enter_context(
                run_services(
                    [settings, {**settings, "QA_ANSWER_CACHE_TTL_SECONDS": CACHE_TTL_SECONDS}],
                    workdir,
                )
            )
        stub_target = Target("stub", stub.url, stub.process.pid, "stub")
        uncached = Target("uncached", uncached_service.url, uncached_service.process.pid, "service")
        cached = Target("cached", cached_service.url, cached_service.process.pid, "service")
        for target in (stub_target, uncached, cached):
            record_affinity(target.name, target.pid, pinning)
        record_affinity("load_generator", os.getpid(), pinning)

        async def run_all() -> None:
            parts = report["parts"]
            if "1" in wanted:
                parts["first_text"] = await first_text(stub_target, uncached, cached, checks, args)
            if "2" in wanted:
                parts["cpu"] = await cpu_per_token(uncached, cached, checks, args)
            if "3" in wanted:
                parts["burst"] = await identical_burst(stub, uncached, cached, checks, args)
            if args.profile:
                stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
                parts["profile"] = await profile_cached(cached, checks, args, stamp)

        try:
            uvloop.run(run_all())
        except (KeyboardInterrupt, RuntimeError, OSError) as exc:
            report["unfinished"] = f"{type(exc).__name__}: {exc}; finished: {list(report['parts'])}"
    report["pinning"] = vars(pinning)
    report["exactness"] = ledger.summary()
    report["wrong_outcomes"] = dict(checks.wrong_outcomes)
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["wall_s"] = time.perf_counter() - started_wall
    write_results(RESULTS, f"answer_cache-{store}", started_at, report)
    print(report_text(report))
    if ledger.mismatches or checks.wrong_outcomes or report.get("unfinished"):
        sys.exit(1)


if __name__ == "__main__":
    main()
