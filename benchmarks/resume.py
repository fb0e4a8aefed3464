"""Resume benchmark: what resumable answers cost, Redis store against in-process.

    uv run python -m benchmarks.resume [--resumes 100] [--pieces 200] ...
    (./benchmarks/run.sh runs it with the defaults)

Processes on 127.0.0.1, all up at once so that both stores see the same
machine at the same moment: the upstream stub (OpenAI's SSE, `--pieces` pieces
at `--piece-delay` apart), a redis-server, replicas A and B sharing it
(QA_REDIS_URL), and replica M with the in-process store (the baseline).
Every measurement alternates between the two stores.

1. Resume latency. Start an answer, read `--read-texts` text events, hang up,
   wait `--gap` seconds (so the events after the cut are in the log: the first
   event is a replay), then resume with `Last-Event-ID` on a fresh connection
   and time from opening it to the first event. Redis: start on A, resume on
   B. Memory: start and resume on M. The resumed answer is then cancelled
   (POST /answers/{id}/cancel), outside the timing.
2. Redis cost per answer: INFO commandstats and INFO stats around `--answers`
   answers read straight through by one reader each, and again around answers
   that are cut on A and resumed on B; divided by the number of answers. The
   readings' own traffic is measured by a reading right after each one and
   subtracted. Per resume = (resumed answers - straight answers) / answers.
3. Service CPU per 1,000 tokens (utime + stime of the process, psutil):
   `--streams` concurrent answers read to the end, `--rounds` rounds per store,
   alternating. Redis: the load goes to A only, and A's CPU is the figure;
   B's and redis-server's CPU are reported beside it.

Figures go to stdout and to benchmarks/results/resume.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.support.redis_server import RedisServer, RedisTraffic, run_redis
from tests.support.service import run_service

from benchmarks.measure import cpu_seconds, percentile
from benchmarks.relay import FAKE_KEY, RESULTS, run_stub

# Every single wait is bounded by this, and each request as a whole below.
REQUEST_TIMEOUT = 10.0


@dataclass
class Setup:
    a: str
    b: str
    m: str
    pids: dict[str, int]
    redis: RedisServer


@dataclass
class Event:
    id: str
    data: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.id.rsplit(":", 1)[1])


def settings(stub_url: str, redis_url: str | None) -> dict[str, str]:
    values = {
        "QA_PROVIDER": "openai",
        "OPENAI_API_KEY": FAKE_KEY,
        "OPENAI_BASE_URL": f"{stub_url}/v1",
        "QA_UPSTREAM_MAX_RETRIES": "0",
        "QA_LOG_LEVEL": "warning",
    }
    if redis_url is not None:
        values["QA_REDIS_URL"] = redis_url
    return values


@contextmanager
def running(args: argparse.Namespace, workdir: Path) -> Iterator[Setup]:
    with ExitStack() as stack:
        stub_url = stack.enter_context(
            run_stub(pieces=args.pieces, first_delay=0.0, piece_delay=args.piece_delay)
        )
        redis = stack.enter_context(run_redis(workdir))
        a = stack.enter_context(run_service(settings(stub_url, redis.url), workdir))
        b = stack.enter_context(run_service(settings(stub_url, redis.url), workdir))
        m = stack.enter_context(run_service(settings(stub_url, None), workdir))
        pids = {"a": a.process.pid, "b": b.process.pid, "m": m.process.pid, "redis": redis.pid}
        yield Setup(a.url, b.url, m.url, pids, redis)


def client(connections: int = 10) -> httpx.AsyncClient:
    # No keep-alive: every request opens its own connection, as a reconnect does.
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=0)
    return httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The SSE events of a response (comments and `retry:` skipped)."""
    event_id, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line == "" and data:
            yield Event(event_id, json.loads(data))
            event_id, data = "", ""


async def read_until(
    http: httpx.AsyncClient,
    url: str,
    query: str,
    *,
    last_event_id: str | None = None,
    texts: int | None = None,
) -> list[Event]:
    """Events until the answer's end, or until `texts` text events (then hang up)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    seen: list[Event] = []
    async with http.stream(
        "GET", f"{url}/ai_write", params={"query": query}, headers=headers
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: status {response.status_code}")
        async for event in events(response):
            seen.append(event)
            if "done" in event.data or "error" in event.data:
                break
            if texts is not None and sum("text" in e.data for e in seen) >= texts:
                break
    return seen  # leaving `stream` early closes the connection: a hang-up


# 1. Resume latency ----------------------------------------------------------


async def one_resume(
    http: httpx.AsyncClient, start: str, resume: str, query: str, args: argparse.Namespace
) -> float:
    first = await read_until(http, start, query, texts=args.read_texts)
    cut = first[-1]
    await asyncio.sleep(args.gap)
    started = time.perf_counter()
    async with http.stream(
        "GET", f"{resume}/ai_write", params={"query": query}, headers={"Last-Event-ID": cut.id}
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"resume: status {response.status_code}")
        replayed = None
        async for event in events(response):
            replayed = event
            break
    elapsed = time.perf_counter() - started
    if replayed is None or replayed.seq != cut.seq + 1 or "meta" in replayed.data:
        raise RuntimeError(f"resume after {cut.id} began with {replayed}")
    answer_id = cut.id.rsplit(":", 1)[0]
    reply = await http.post(f"{resume}/answers/{answer_id}/cancel")
    if reply.status_code != 200:
        raise RuntimeError(f"cancel: status {reply.status_code}")
    return elapsed


async def resume_latencies(setup: Setup, args: argparse.Namespace) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"redis": [], "memory": []}
    async with client() as http:
        for n in range(args.resumes + 1):  # the first pair is a warm-up
            for store, start, resume in (
                ("redis", setup.a, setup.b),
                ("memory", setup.m, setup.m),
            ):
                async with asyncio.timeout(4 * REQUEST_TIMEOUT):
                    elapsed = await one_resume(http, start, resume, f"resume {n}", args)
                if n:
                    samples[store].append(elapsed)
    return samples


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = percentile(ordered, 0.99)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": p99 * 1000,
        "max_ms": ordered[-1] * 1000,
        "n": len(ordered),
        "samples_ms": [round(x * 1000, 2) for x in samples],  # in the order taken
    }


# 2. Redis cost ---------------------------------------------------------------


async def straight_answer(http: httpx.AsyncClient, setup: Setup, query: str, pieces: int) -> None:
    seen = await read_until(http, setup.a, query)
    check_whole(seen, pieces)


async def resumed_answer(
    http: httpx.AsyncClient, setup: Setup, query: str, args: argparse.Namespace
) -> None:
    first = await read_until(http, setup.a, query, texts=args.read_texts)
    await asyncio.sleep(args.gap)
    rest = await read_until(http, setup.b, query, last_event_id=first[-1].id)
    check_whole(first + rest, args.pieces)


def check_whole(seen: list[Event], pieces: int) -> None:
    seqs = [e.seq for e in seen]
    texts = sum("text" in e.data for e in seen)
    if seqs != list(range(len(seen))) or texts != pieces or "done" not in seen[-1].data:
        raise RuntimeError(f"answer not whole: {texts} texts, seqs {seqs[:3]}..{seqs[-3:]}")


def traffic_of(redis: RedisServer, load: Any, settle: float) -> RedisTraffic:
    """Redis traffic while `load()` runs, less that of the readings themselves."""
    before = redis.command_stats()
    load()
    time.sleep(settle)  # the producers' last DEL (lease) comes after the reader's `done`
    after = redis.command_stats()
    readings = redis.command_stats() - after  # what one reading adds, measured now
    return (after - before) - readings


def per(traffic: RedisTraffic, count: int) -> dict[str, Any]:
    return {
        "calls": {name: n / count for name, n in sorted(traffic.calls.items())},
        "total_calls": traffic.total_calls / count,
        "input_bytes": traffic.input_bytes / count,
        "output_bytes": traffic.output_bytes / count,
    }


def redis_cost(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    n = args.answers

    async def straight() -> None:
        async with client(n + 10) as http, asyncio.timeout(60):
            await asyncio.gather(
                *(straight_answer(http, setup, f"cost {i}", args.pieces) for i in range(n))
            )

    async def resumed() -> None:
        async with client(n + 10) as http, asyncio.timeout(60):
            await asyncio.gather(
                *(resumed_answer(http, setup, f"cost r{i}", args) for i in range(n))
            )

    # Warm-up: the script loaded, both replicas' connection pools filled.
    asyncio.run(straight())
    asyncio.run(resumed())
    plain = traffic_of(setup.redis, lambda: asyncio.run(straight()), args.settle)
    with_resume = traffic_of(setup.redis, lambda: asyncio.run(resumed()), args.settle)
    return {
        "answers": n,
        "pieces_per_answer": args.pieces,
        "per_answer": per(plain, n),
        "per_answer_with_one_resume": per(with_resume, n),
        "per_resume": per(with_resume - plain, n),
    }


# 3. CPU per 1,000 tokens -------------------------------------------------------


async def load(url: str, streams: int, pieces: int, tag: str) -> int:
    async with client(streams + 10) as http, asyncio.timeout(120):
        answers = await asyncio.gather(
            *(read_until(http, url, f"cpu {tag} {i}") for i in range(streams))
        )
    for seen in answers:
        check_whole(seen, pieces)
    return sum(sum("text" in e.data for e in seen) for seen in answers)


def cpu_per_tokens(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    watched = {"redis": ("a", "b", "redis"), "memory": ("m",)}
    totals: dict[str, dict[str, float]] = {
        store: {"tokens": 0, "wall_s": 0, **{name: 0.0 for name in names}}
        for store, names in watched.items()
    }
    rounds: list[float] = []
    for url in (setup.a, setup.m):  # warm-up
        asyncio.run(load(url, 4, args.pieces, "warm"))
    for n in range(args.rounds):
        per_round = {}
        for store, url in (("redis", setup.a), ("memory", setup.m)):
            time.sleep(args.settle)
            names = watched[store]
            before = {name: cpu_seconds(setup.pids[name]) for name in names}
            started = time.perf_counter()
            tokens = asyncio.run(load(url, args.streams, args.pieces, f"{store} {n}"))
            wall = time.perf_counter() - started
            time.sleep(args.settle)  # the answers' last appends and lease releases
            row = totals[store]
            used = {name: cpu_seconds(setup.pids[name]) - before[name] for name in names}
            for name in names:
                row[name] += used[name]
            row["tokens"] += tokens
            row["wall_s"] += wall
            per_round[store] = used[names[0]] / tokens
        rounds.append(per_round["redis"] / per_round["memory"])
    redis, memory = totals["redis"], totals["memory"]

    def per_1000(cpu: float, tokens: float) -> float:
        return cpu / tokens * 1000

    return {
        "streams": args.streams,
        "rounds": args.rounds,
        "pieces": args.pieces,
        "piece_delay_s": args.piece_delay,
        "memory": {
            "tokens": memory["tokens"],
            "wall_s": memory["wall_s"],
            "service_cpu_s": memory["m"],
            "service_cpu_s_per_1000_tokens": per_1000(memory["m"], memory["tokens"]),
        },
        "redis": {
            "tokens": redis["tokens"],
            "wall_s": redis["wall_s"],
            "service_cpu_s": redis["a"],
            "service_cpu_s_per_1000_tokens": per_1000(redis["a"], redis["tokens"]),
            "idle_replica_cpu_s": redis["b"],
            "redis_server_cpu_s": redis["redis"],
            "redis_server_cpu_s_per_1000_tokens": per_1000(redis["redis"], redis["tokens"]),
        },
        "ratio_redis_to_memory": per_1000(redis["a"], redis["tokens"])
        / per_1000(memory["m"], memory["tokens"]),
        "ratio_redis_plus_redis_server_to_memory": per_1000(
            redis["a"] + redis["redis"], redis["tokens"]
        )
        / per_1000(memory["m"], memory["tokens"]),
        "ratio_each_round": rounds,
    }


# Report -------------------------------------------------------------------------


def report_text(report: dict[str, Any]) -> str:
    lines = []
    latency = report["resume_latency"]
    lines.append(
        f"\nResume latency: new connection to first replayed event (ms), n={latency['resumes']}"
        f", cut after {latency['read_texts']} texts, resumed {latency['gap_s'] * 1000:.0f} ms later"
    )
    for store, where in (("redis", "start on A, resume on B"), ("memory", "one process")):
        row = latency[store]
        lines.append(
            f"  {store:7} p50 {row['p50_ms']:6.2f}  p99 {row['p99_ms']:6.2f}"
            f"  max {row['max_ms']:6.2f}   ({where})"
        )
    lines.append(
        f"  redis / memory: p50 {latency['ratio_p50']:.2f}x  p99 {latency['ratio_p99']:.2f}x"
    )

    cost = report["redis_cost"]
    lines.append(
        f"\nRedis cost: {cost['answers']} answers of {cost['pieces_per_answer']} text pieces"
        f" at {report['cpu']['piece_delay_s'] * 1000:.0f} ms, one reader each"
    )
    for name, label in (
        ("per_answer", "per answer (no resume)"),
        ("per_resume", "per resume (resumed answer - plain answer)"),
    ):
        row = cost[name]
        calls = ", ".join(
            f"{c} {n:+.1f}" if name == "per_resume" else f"{c} {n:.1f}"
            for c, n in sorted(row["calls"].items(), key=lambda x: -abs(x[1]))
        )
        lines.append(
            f"  {label}: {row['total_calls']:.1f} commands, {row['input_bytes']:.0f} B in,"
            f" {row['output_bytes']:.0f} B out"
        )
        lines.append(f"    {calls}")
    per_piece = cost["per_answer"]["total_calls"] / cost["pieces_per_answer"]
    lines.append(
        f"  commands per text piece, plain answer: {per_piece:.2f} (commands a script runs"
        " count too: evalsha's exists and xadd)"
    )
    lines.append(
        "  per resume: a reader on the producing replica reads its memory (no XREAD); the"
        " resumed reader on B reads Redis, one XREAD per live piece after the replay"
    )

    cpu = report["cpu"]
    lines.append(
        f"\nService CPU per 1,000 tokens: {cpu['streams']} concurrent streams x {cpu['rounds']}"
        f" rounds per store, {cpu['pieces']} pieces at {cpu['piece_delay_s'] * 1000:.0f} ms"
    )
    memory, redis = cpu["memory"], cpu["redis"]
    paced = cpu["streams"] / cpu["piece_delay_s"]
    lines.append(
        f"  tokens/s delivered: memory {memory['tokens'] / memory['wall_s']:.0f},"
        f" redis {redis['tokens'] / redis['wall_s']:.0f} (the stub's pace allows {paced:.0f})"
    )
    lines.append(
        f"  memory  {memory['service_cpu_s_per_1000_tokens']:.3f} CPU-s/1k tokens"
        f"  ({memory['service_cpu_s']:.2f} s for {memory['tokens']:.0f} tokens,"
        f" wall {memory['wall_s']:.1f} s)"
    )
    lines.append(
        f"  redis   {redis['service_cpu_s_per_1000_tokens']:.3f} CPU-s/1k tokens"
        f"  ({redis['service_cpu_s']:.2f} s for {redis['tokens']:.0f} tokens,"
        f" wall {redis['wall_s']:.1f} s; service process A only)"
    )
    server, idle = redis["redis_server_cpu_s_per_1000_tokens"], redis["idle_replica_cpu_s"]
    lines.append(
        f"          redis-server {server:.3f} CPU-s/1k tokens"
        f" ({redis['redis_server_cpu_s']:.2f} s); idle replica B {idle:.2f} s"
    )
    lines.append(
        f"  redis / memory: {cpu['ratio_redis_to_memory']:.2f}x service process,"
        f" {cpu['ratio_redis_plus_redis_server_to_memory']:.2f}x with redis-server's CPU added"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--resumes", type=int, default=100, help="resumes timed per store")
    parser.add_argument("--read-texts", type=int, default=5, help="text events before the cut")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds from cut to resume")
    parser.add_argument("--pieces", type=int, default=200, help="text pieces per answer")
    parser.add_argument("--piece-delay", type=float, default=0.02, help="stub's pace, seconds")
    parser.add_argument("--answers", type=int, default=20, help="answers per Redis cost reading")
    parser.add_argument("--streams", type=int, default=20, help="concurrent streams, CPU part")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per store, CPU part")
    parser.add_argument("--settle", type=float, default=0.5, help="quiet seconds around readings")
    parser.add_argument("--output", type=Path, default=RESULTS / "resume.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "work"
    workdir.mkdir(exist_ok=True)
    began = time.perf_counter()
    with running(args, workdir) as setup:
        samples = asyncio.run(resume_latencies(setup, args))
        time.sleep(args.settle)
        cost = redis_cost(setup, args)
        cpu = cpu_per_tokens(setup, args)
    redis_latency, memory_latency = percentiles(samples["redis"]), percentiles(samples["memory"])
    report = {
        "resume_latency": {
            "resumes": args.resumes,
            "read_texts": args.read_texts,
            "gap_s": args.gap,
            "redis": redis_latency,
            "memory": memory_latency,
            "ratio_p50": redis_latency["p50_ms"] / memory_latency["p50_ms"],
            "ratio_p99": redis_latency["p99_ms"] / memory_latency["p99_ms"],
        },
        "redis_cost": cost,
        "cpu": cpu,
        "seconds": time.perf_counter() - began,
    }
    args.output.write_text(json.dumps(report, indent=2))
    print(report_text(report))
    print(f"\n{report['seconds']:.0f} s in all; written to {args.output}")


if __name__ == "__main__":
    main()
