"""Limits benchmark: the service's CPU per request that admission and per-client limits add.

    uv run --frozen python -m benchmarks.admission_cost [--requests 300] [--rounds 8] ...
    (./benchmarks/run.sh runs it with the defaults, about 3 minutes on 2 cores)

Processes on 127.0.0.1, all up at once so every target sees the same machine
at the same moment: the upstream stub (benchmarks/load_stub.py, a 2-token
answer at once), two redis-servers (one per Redis target, so each one's
INFO commandstats are that target's alone), and five services:

    memory            no per-client limits, the in-process answer store (the baseline)
    memory+limits     QA_RATE_LIMIT, QA_CLIENT_MAX_STREAMS and QA_CLIENT_TOKEN_BUDGET,
                      each above the load so nothing is refused (all_limits); memory counters
    redis             no limits, QA_REDIS_URL (the answer store is then Redis too)
    redis+limits      the limits above, counted in Redis
    memory+refusing   QA_RATE_LIMIT=1/hour: every request but the first is a 429

QA_MAX_STREAMS is at its default everywhere (the process cap is always on: one
comparison). The limits' own cost on Redis is (redis+limits) - (redis).

Each round sends `--requests` GET /ai_write at `--concurrency` at once to
each target in turn (the order rotates every round), on a fresh connection
each, from `--clients` client addresses in turn (X-Forwarded-For, which the
service trusts from 127.0.0.1): per-client windows then hold what many
clients' would, not one client's whole load. Every admitted answer must end
with `done` and the stub's text; every refusal must be 429 rate_limited.
Service CPU is utime + stime (psutil) from before a round to `--settle`
seconds after it (places given back and tokens charged as answers end).

Pinning, as benchmarks/load.py: the services on core 0; the stub, the
redis-servers and this load generator on core 1.

Figures go to stdout and to benchmarks/results/admission_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support.redis_server import RedisServer, RedisTraffic, run_redis
from tests.support.service import run_service

from benchmarks.load import (
    LOAD_CORE,
    RESULTS,
    SERVICE_CORE,
    git_commit,
    pin_load_generator,
    record_affinity,
    run_stub,
    spawned_on,
)
from benchmarks.measure import cpu_seconds
from benchmarks.resume import per, settings, traffic_of

MARKER = "mk-limits"
PIECES = ["Hi", "."]
REQUEST_DEADLINE = 10.0
WARM_UP = 50
REFUSING = {"QA_RATE_LIMIT": "1/hour"}


def all_limits(args: argparse.Namespace) -> dict[str, str]:
    """Every limit on, above what the load reaches: these measure the checks, never a refusal.

    The rate is of a real deployment's size, not "1000000/minute": the
    moving window's cost grows with its limit (in Redis, a binary search of
    LINDEX calls over `limit` places), so a huge one would measure a window
    nobody configures. Twice a client's share of the whole run, at least 60.
    """
    per_client = -(-(WARM_UP + args.requests * args.rounds) // args.clients)
    return {
        "QA_RATE_LIMIT": f"{max(60, 2 * per_client)}/minute",
        "QA_CLIENT_MAX_STREAMS": str(args.concurrency),
        "QA_CLIENT_TOKEN_BUDGET": "1000000000/day",
    }


@dataclass
class Target:
    name: str
    url: str
    pid: int
    redis: RedisServer | None = None
    expect: str = "done"  # or "rate_limited"
    # Client addresses its requests come from (None: --clients).
    clients: int | None = None
    cpu_s: float = 0.0
    requests: int = 0
    wall_s: float = 0.0
    traffics: list[RedisTraffic] = field(default_factory=list)
    per_round_ms: list[float] = field(default_factory=list)


async def ask(url: str, client: str) -> tuple[int, bytes]:
    """One GET /ai_write on its own connection, read to its end: (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"GET /ai_write?query={MARKER} HTTP/1.1\r\nHost: {host}\r\n"
            f"X-Forwarded-For: {client}\r\nConnection: close\r\n\r\n".encode()
        )
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = unchunked(body)
    return int(head.split(b" ", 2)[1]), body


def unchunked(body: bytes) -> bytes:
    """An HTTP/1.1 chunked body's bytes."""
    parts, rest = [], body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        parts.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(parts)


def client_address(n: int) -> str:
    return f"10.0.{n // 250}.{n % 250 + 1}"


def check(target: Target, status: int, body: bytes) -> None:
    if target.expect == "done":
        text = "".join(
            json.loads(line[5:]).get("text", "")
            for line in body.decode().splitlines()
            if line.startswith("data:")
        )
        ok = status == 200 and b'"done"' in body and text == "".join(PIECES)
    else:
        ok = status == 429 and json.loads(body)["error"]["code"] == target.expect
    if not ok:
        raise RuntimeError(f"{target.name}: unexpected {status} {body[:300]!r}")


async def load(target: Target, requests: int, concurrency: int, clients: int) -> None:
    sent = iter(range(requests))
    clients = target.clients or clients

    async def worker() -> None:
        for n in sent:
            async with asyncio.timeout(REQUEST_DEADLINE):
                status, body = await ask(target.url, client_address(n % clients))
            check(target, status, body)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure(target: Target, args: argparse.Namespace) -> None:
    """One round on `target`: its CPU (and its Redis traffic) per request."""

    def run() -> None:
        asyncio.run(load(target, args.requests, args.concurrency, args.clients))

    time.sleep(args.settle)
    before = cpu_seconds(target.pid)
    started = time.perf_counter()
    if target.redis is None:
        run()
        time.sleep(args.settle)
    else:
        target.traffics.append(traffic_of(target.redis, run, args.settle))
    wall = time.perf_counter() - started
    used = cpu_seconds(target.pid) - before
    target.cpu_s += used
    target.requests += args.requests
    target.wall_s += wall
    target.per_round_ms.append(used / args.requests * 1000)


def summed(traffics: list[RedisTraffic]) -> RedisTraffic:
    calls: Counter[str] = Counter()
    for traffic in traffics:
        calls.update(traffic.calls)
    return RedisTraffic(
        dict(calls),
        sum(t.input_bytes for t in traffics),
        sum(t.output_bytes for t in traffics),
    )


def ms_per_request(target: Target) -> float:
    return target.cpu_s / target.requests * 1000


def report(targets: dict[str, Target], args: argparse.Namespace) -> dict[str, Any]:
    def row(name: str, baseline: str | None) -> dict[str, Any]:
        target = targets[name]
        result: dict[str, Any] = {
            "requests": target.requests,
            "cpu_s": target.cpu_s,
            "cpu_ms_per_request": ms_per_request(target),
            "cpu_ms_per_request_each_round": target.per_round_ms,
            "requests_per_s": target.requests / (target.wall_s - args.settle * args.rounds),
        }
        if target.redis is not None:
            result["redis_per_request"] = per(summed(target.traffics), target.requests)
        if baseline is not None:
            base = targets[baseline]
            result["against"] = baseline
            result["added_cpu_ms_per_request"] = ms_per_request(target) - ms_per_request(base)
            result["ratio"] = ms_per_request(target) / ms_per_request(base)
            result["ratio_each_round"] = each = [
                a / b for a, b in zip(target.per_round_ms, base.per_round_ms, strict=True)
            ]
            # Robust to one round that other jobs on the machine disturbed.
            result["ratio_median_of_rounds"] = statistics.median(each)
        return result

    return {
        "memory": row("memory", None),
        "memory+limits": row("memory+limits", "memory"),
        "redis": row("redis", "memory"),
        "redis+limits": row("redis+limits", "redis"),
        "memory+refusing": row("memory+refusing", "memory+limits"),
    }


def report_text(result: dict[str, Any]) -> str:
    args, rows = result["args"], result["targets"]
    lines = [
        f"\nLimits: {args['requests']} requests x {args['rounds']} rounds per target,"
        f" {args['concurrency']} at once, from {args['clients']} client addresses;"
        f" answers of {len(PIECES)} tokens",
        "  limits on: " + ", ".join(f"{k}={v}" for k, v in result["limits"].items()),
        f"  pinning: {'ok' if result['pinning']['ok'] else 'NOT PINNED'}"
        f" ({result['pinning']['detail']})",
        f"  {'target':16} {'CPU ms/req':>10} {'added ms':>9} {'ratio':>6}"
        f" {'rounds: median':>17} {'against':>14}"
        f" {'req/s':>6} {'redis cmds/req':>14}",
    ]
    for name, row in rows.items():
        added = f"{row['added_cpu_ms_per_request']:+9.3f}" if "against" in row else f"{'':9}"
        ratio = f"{row['ratio']:6.2f}" if "against" in row else f"{'':6}"
        rounds = (
            f"{row['ratio_median_of_rounds']:.2f} ({min(row['ratio_each_round']):.2f}"
            f"-{max(row['ratio_each_round']):.2f})"
            if "against" in row
            else ""
        )
        redis = row.get("redis_per_request", {}).get("total_calls")
        lines.append(
            f"  {name:16} {row['cpu_ms_per_request']:10.3f} {added} {ratio}"
            f" {rounds:>17} {row.get('against', ''):>14} {row['requests_per_s']:6.0f}"
            f" {'' if redis is None else f'{redis:14.1f}'}"
        )
    for name in ("redis", "redis+limits"):
        calls = rows[name]["redis_per_request"]["calls"]
        lines.append(
            f"  {name} commands per request: "
            + ", ".join(f"{c} {n:.2f}" for c, n in sorted(calls.items(), key=lambda x: -x[1]))
        )
    lines.append(
        "  memory+refusing: every request a 429 rate_limited; 'added' is a refusal's CPU"
        " less an admitted answer's, both with the limits on"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300, help="requests per target a round")
    parser.add_argument("--rounds", type=int, default=8, help="rounds, targets in turn")
    parser.add_argument("--concurrency", type=int, default=10, help="requests at once")
    parser.add_argument("--clients", type=int, default=200, help="client addresses, in turn")
    parser.add_argument("--settle", type=float, default=0.5, help="quiet seconds around a round")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "work"
    workdir.mkdir(exist_ok=True)
    pinning = pin_load_generator(f"services on core {SERVICE_CORE}, the rest on {LOAD_CORE}")
    spec = {MARKER: {"pieces": PIECES, "first_delay": 0.0, "piece_delay": 0.0}}
    with ExitStack() as stack:
        stub_url, stub_pid = stack.enter_context(run_stub(spec))
        redis_plain = stack.enter_context(run_redis(workdir))
        redis_limits = stack.enter_context(run_redis(workdir))
        plans: list[tuple[str, RedisServer | None, dict[str, str], str]] = [
            ("memory", None, {}, "done"),
            ("memory+limits", None, all_limits(args), "done"),
            ("redis", redis_plain, {}, "done"),
            ("redis+limits", redis_limits, all_limits(args), "done"),
            ("memory+refusing", None, REFUSING, "rate_limited"),  # from one client
        ]
        targets: dict[str, Target] = {}
        with spawned_on(SERVICE_CORE, pinning):
            for name, redis, limits, expect in plans:
                url = None if redis is None else redis.url
                service = stack.enter_context(
                    run_service({**settings(stub_url, url), **limits}, workdir)
                )
                targets[name] = Target(name, service.url, service.process.pid, redis, expect)
        targets["memory+refusing"].clients = 1
        record_affinity("stub", stub_pid, pinning)
        record_affinity("load_generator", os.getpid(), pinning)
        for target in targets.values():
            record_affinity(target.name, target.pid, pinning)
        # Warm-up; the refusing target's first request is its one admitted answer.
        refusing = targets["memory+refusing"]
        asyncio.run(ask(refusing.url, client_address(0)))
        for target in targets.values():
            asyncio.run(load(target, WARM_UP, args.concurrency, args.clients))
        names = list(targets)
        for n in range(args.rounds):
            for name in names[n % len(names) :] + names[: n % len(names)]:
                measure(targets[name], args)
        result = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "args": vars(args),
            "limits": all_limits(args),
            "git": git_commit(),
            "pinning": vars(pinning),
            "loadavg_end": list(os.getloadavg()),
            "targets": report(targets, args),
        }
    result["seconds"] = time.perf_counter() - began
    path = RESULTS / "admission_cost.json"
    path.write_text(json.dumps(result, indent=2))
    print(report_text(result))
    print(f"\n{result['seconds']:.0f} s in all; written to {path}")


if __name__ == "__main__":
    main()
