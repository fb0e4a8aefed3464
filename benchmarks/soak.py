"""Soak: mixed traffic for minutes on two replicas over one Redis, sampled: nothing may grow.

    uv run --frozen python -m benchmarks.soak [--minutes 30] [--sample-seconds 30]
    (./benchmarks/run.sh runs the 30 minutes; tests/integration/test_soak.py two)

Processes, all on 127.0.0.1: redis-server (tests/support/redis_server.py), the
upstream stub (benchmarks/load_stub.py), two services sharing the Redis
(`QA_REDIS_URL`, a short `QA_RESUME_TTL_SECONDS`, `QA_CLIENT_MAX_STREAMS=2`),
and this process's clients (benchmarks/soak_traffic.py: complete answers,
hang-ups at random points, explicit cancels, resumes on either replica,
refusals, slow readers; every answer read to its end checked for exactness).

Every `--sample-seconds` it reads, per replica: RSS, open fds, asyncio tasks
(the `qa_asyncio_tasks` gauge), answers generating (`qa_active_streams`), and
its TCP connections to Redis and to the provider (psutil, by remote port);
and of Redis: our keys (SCAN qa:*) and used_memory.

The bar, on the samples after `--warmup-seconds`, comparing the median of
their last third with the median of their first third ("start" and "end"):
- RSS: the end within 5% of the start;
- fds, tasks, connections to Redis and to the provider: within 5% of the
  start, or within what the live answers explain: PER_STREAM[series] for each
  answer this replica generated at the end sample (`qa_active_streams`, at
  most the client's workers), over and above the start;
- Redis keys: every sample within what the answers explain: each answer keeps
  KEYS_PER_ANSWER keys until QA_RESUME_TTL_SECONDS after its end, so at most
  KEYS_PER_ANSWER x (answers started within the TTL + the grace + the longest
  answer + a sample's slack) + one slot key per client holding answers;
- Redis used_memory: the end within 5% of the start, scaled by the keys the
  answers explain (their end over their start, when that is above 1);
- at rest, after the traffic: tasks back to what they were before it (+5%);
- after the traffic stops and the TTL passes, no key of ours in Redis.
Exactness: any answer whose text differs from the stub's fails the run too.

Results: a table on stdout, and benchmarks/results/soak-<timestamp>.json (and
soak.json) with every sample, the traffic, the verdict and the machine's load.
Exits 1 when the bar is not met, saying which series grew.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import uvloop
from tests.support.daemon import wait_until
from tests.support.metrics import read_metrics, total
from tests.support.redis_server import RedisServer, run_redis
from tests.support.service import RunningService, run_services

from benchmarks.load import (
    RESULTS,
    core_busy_seconds,
    git_commit,
    own_cpu,
    run_stub,
    service_settings,
)
from benchmarks.measure import cpu_seconds, write_results
from benchmarks.soak_traffic import LONGEST_ANSWER_SECONDS, SHORT, Traffic, exchange, stub_spec

REPLICA_SERIES = ("rss_mb", "fds", "tasks", "redis_connections", "provider_connections")
REDIS_SERIES = ("keys", "used_memory_mb")
FLAT = 0.05
# What one answer generating may hold over and above a replica at rest: its
# task, its reader's, the write-behind's and the lease's (tasks); the client's
# socket, the upstream one and a Redis reader's (fds); a blocking Redis read
# (Redis connections); its upstream request (provider connections).
PER_STREAM = {"tasks": 8, "fds": 4, "redis_connections": 2, "provider_connections": 1}
# qa:answer:{id}, :events, :lease, :readers (stores/redis_answers.py).
KEYS_PER_ANSWER = 4
REST_SLACK = 0.05


@dataclass
class Plan:
    minutes: float = 30.0
    sample_seconds: float = 30.0
    warmup_seconds: float = 180.0
    ttl_seconds: int = 20
    grace_seconds: float = 2.0
    workers: int = 10


def replica_settings(stub_url: str, redis: RedisServer, plan: Plan) -> dict[str, str]:
    return {
        **service_settings(stub_url),
        "QA_REDIS_URL": redis.url,
        "QA_RESUME_TTL_SECONDS": str(plan.ttl_seconds),
        "QA_RESUME_GRACE_SECONDS": str(plan.grace_seconds),
        "QA_CLIENT_MAX_STREAMS": "2",
    }


@dataclass
class Stack:
    redis: RedisServer
    stub_pid: int
    stub_port: int
    services: list[RunningService]


@contextmanager
def run_stack(plan: Plan, workdir: Path) -> Iterator[Stack]:
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(workdir))
        stub_url, stub_pid = stack.enter_context(run_stub(stub_spec()))
        settings = replica_settings(stub_url, redis, plan)
        services = stack.enter_context(run_services([settings] * 2, workdir))
        yield Stack(redis, stub_pid, int(stub_url.rsplit(":", 1)[1]), services)


def connections_to(pid: int, port: int) -> int:
    """The process's established TCP connections whose far end is 127.0.0.1:`port`."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def our_keys(redis: RedisServer) -> int:
    with redis.client() as client:
        return sum(1 for _ in client.scan_iter(match="qa:*", count=1000))


def sample(stack: Stack) -> dict[str, Any]:
    """One reading of every series (blocking: run it in a thread)."""
    replicas = []
    for service in stack.services:
        process = psutil.Process(service.process.pid)
        metrics = read_metrics(service.url)
        if not any(key.startswith("qa_asyncio_tasks{") for key in metrics):
            # total() of a missing metric is 0: flat, and the tasks series would prove nothing.
            raise RuntimeError(f"{service.url}/metrics has no qa_asyncio_tasks")
        replicas.append(
            {
                "rss_mb": process.memory_info().rss / 2**20,
                "fds": process.num_fds(),
                "tasks": total(metrics, "qa_asyncio_tasks"),
                "active_streams": total(metrics, "qa_active_streams"),
                "redis_connections": connections_to(process.pid, stack.redis.port),
                "provider_connections": connections_to(process.pid, stack.stub_port),
            }
        )
    with stack.redis.client() as client:
        used_memory = int(client.info("memory")["used_memory"])
    return {
        "at": time.monotonic(),
        "replicas": replicas,
        "keys": our_keys(stack.redis),
        "used_memory_mb": used_memory / 2**20,
    }


class MachineLoad:
    """Load averages, and the share of the machine's CPU used by processes not ours."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self.start = self._reading()
        self.loadavg_start = os.getloadavg()

    def _reading(self) -> tuple[float, float, float]:
        ours = sum(cpu_seconds(pid) for pid in self._pids) + own_cpu()
        return time.monotonic(), sum(core_busy_seconds()), ours

    def summary(self) -> dict[str, Any]:
        (t0, busy0, ours0), (t1, busy1, ours1) = self.start, self._reading()
        cores = len(core_busy_seconds())
        return {
            "loadavg_start": self.loadavg_start,
            "loadavg_end": os.getloadavg(),
            "cpu_count": cores,
            "foreign_busy_share": max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (t1 - t0) / cores,
            "python": platform.python_version(),
            **git_commit(),
        }


async def soak(plan: Plan, stack: Stack) -> dict[str, Any]:
    """Traffic for `plan.minutes`, sampled; then rest until our keys expire."""
    pids = [s.process.pid for s in stack.services] + [stack.redis.pid, stack.stub_pid]
    load = MachineLoad(pids)
    # One answer on each first: what a replica starts once, at its first stream
    # (sse-starlette's shutdown watcher, a task per loop), is not growth.
    for service in stack.services:
        await exchange(service.url, "GET", f"/ai_write?query={SHORT}")
    at_rest_before = await asyncio.to_thread(sample_at_rest, stack)
    traffic = Traffic([s.url for s in stack.services], plan.workers)
    stop = asyncio.Event()
    running = asyncio.create_task(traffic.run(stop))
    began, samples = time.monotonic(), []
    end = began + plan.minutes * 60
    while time.monotonic() < end and not running.done():
        await asyncio.sleep(min(plan.sample_seconds, max(0.0, end - time.monotonic())))
        reading = await asyncio.to_thread(sample, stack)
        window = (
            plan.ttl_seconds + plan.grace_seconds + LONGEST_ANSWER_SECONDS + plan.sample_seconds
        )
        reading["t"] = round(reading["at"] - began, 1)
        reading["answers_in_ttl_window"] = traffic.tally.started_since(reading["at"] - window)
        samples.append(reading)
        print(progress(reading), file=sys.stderr, flush=True)
    stop.set()
    await running  # each worker ends its exchange, within its deadline
    traffic_seconds = time.monotonic() - began
    expiry = plan.ttl_seconds + plan.grace_seconds + LONGEST_ANSWER_SECONDS + 30
    keys_left, expired_after = await asyncio.to_thread(wait_for_no_keys, stack, expiry)
    at_rest_after = await asyncio.to_thread(sample_at_rest, stack)
    return {
        "plan": asdict(plan),
        "traffic": {
            "seconds": round(traffic_seconds, 1),
            "exchanges": traffic.tally.done,
            "answers_started": len(traffic.tally.started_at),
            "problems": traffic.tally.problems,
        },
        "samples": samples,
        "at_rest_before": at_rest_before,
        "at_rest_after": at_rest_after,
        "redis_after_ttl": {"keys_left": keys_left, "empty_after_s": expired_after},
        "machine": load.summary(),
    }


def progress(reading: dict[str, Any]) -> str:
    """One line per sample, for a run watched as it goes."""
    replicas = " | ".join(
        f"rss {r['rss_mb']:.0f} MB fds {r['fds']} tasks {r['tasks']:.0f}"
        f" redis {r['redis_connections']} provider {r['provider_connections']}"
        f" live {r['active_streams']:.0f}"
        for r in reading["replicas"]
    )
    return f"t={reading['t']:.0f}s {replicas} | keys {reading['keys']}"


def sample_at_rest(stack: Stack) -> dict[str, Any]:
    """A reading once no replica generates an answer."""

    def idle() -> dict[str, Any] | None:
        reading = sample(stack)
        return reading if not any(r["active_streams"] for r in reading["replicas"]) else None

    reading: dict[str, Any] = wait_until(idle, 60, "no answer generating", interval=0.5)
    return reading


def wait_for_no_keys(stack: Stack, deadline: float) -> tuple[int, float | None]:
    """Our keys left after `deadline` seconds (0 as soon as there are none), and when."""
    began = time.monotonic()
    try:
        wait_until(lambda: our_keys(stack.redis) == 0, deadline, "Redis empty", interval=0.5)
    except Exception:  # noqa: BLE001 -- NotReadyError: the count says how many are left
        return our_keys(stack.redis), None
    return 0, round(time.monotonic() - began, 1)


def series(samples: list[dict[str, Any]], name: str, replica: int | None) -> list[float]:
    if replica is None:
        return [float(s[name]) for s in samples]
    return [float(s["replicas"][replica][name]) for s in samples]


def thirds(values: list[float]) -> tuple[float, float]:
    """Medians of the first and the last third: start and end, with one sample's noise damped."""
    third = max(1, len(values) // 3)
    return statistics.median(values[:third]), statistics.median(values[-third:])


def judge(result: dict[str, Any]) -> dict[str, Any]:
    """The table (start and end of each series) and what grew past its bound."""
    plan = Plan(**result["plan"])
    after_warmup = [s for s in result["samples"] if s["t"] >= plan.warmup_seconds]
    table, grew = [], []
    if len(after_warmup) < 3:
        return {"table": [], "grew": [f"only {len(after_warmup)} samples after the warm-up"]}

    def row(name: str, start: float, end: float, bound: float, why: str) -> None:
        table.append({"series": name, "start": start, "end": end, "bound": bound, "bound_is": why})
        if end > bound:
            grew.append(f"{name}: {start:.1f} -> {end:.1f} (bound {bound:.1f}: {why})")

    for index in range(len(after_warmup[0]["replicas"])):
        end_window = after_warmup[-max(1, len(after_warmup) // 3) :]
        live = max(s["replicas"][index]["active_streams"] for s in end_window)
        for name in REPLICA_SERIES:
            start, end = thirds(series(after_warmup, name, index))
            name_here = f"replica {index + 1} {name}"
            if name == "rss_mb":
                row(name_here, start, end, start * (1 + FLAT), "start + 5%")
            else:
                bound = start + max(FLAT * start, PER_STREAM[name] * live)
                row(
                    name_here,
                    start,
                    end,
                    bound,
                    f"start + max(5%, {PER_STREAM[name]} x {live:g} live)",
                )
    keys_start, keys_end = thirds(series(after_warmup, "keys", None))
    worst = max(after_warmup, key=lambda s: s["keys"] - explained_keys(s))
    over = worst["keys"] - explained_keys(worst)
    table.append(
        {
            "series": "redis keys",
            "start": keys_start,
            "end": keys_end,
            "bound": explained_keys(after_warmup[-1]),
            "bound_is": f"{KEYS_PER_ANSWER} x answers in the TTL window + live, each sample",
        }
    )
    if over > 0:
        grew.append(
            f"redis keys: {worst['keys']} at t={worst['t']} s, {over} past what"
            f" {worst['answers_in_ttl_window']} answers in the TTL window explain"
        )
    memory_start, memory_end = thirds(series(after_warmup, "used_memory_mb", None))
    # Scaled by the keys the traffic explains, not by the keys held: a key that
    # never expires must not excuse the memory it takes.
    explained_start, explained_end = thirds([explained_keys(s) for s in after_warmup])
    scale = max(1.0, explained_end / explained_start) if explained_start else 1.0
    row("redis used_memory_mb", memory_start, memory_end, memory_start * (1 + FLAT) * scale,
        f"start + 5%, x {scale:.2f} for the answers in the TTL window")  # fmt: skip
    for index, (before, after) in enumerate(
        zip(result["at_rest_before"]["replicas"], result["at_rest_after"]["replicas"], strict=True)
    ):
        bound = before["tasks"] * (1 + REST_SLACK) + 1
        row(f"replica {index + 1} tasks at rest", before["tasks"], after["tasks"], bound,
            "before the traffic + 5%")  # fmt: skip
    keys_left = result["redis_after_ttl"]["keys_left"]
    if keys_left:
        grew.append(f"redis: {keys_left} keys of ours left after the TTL")
    if any("text differs" in p for p in result["traffic"]["problems"]):
        grew.append("exactness: an answer's text differs from the stub's")
    return {"table": table, "grew": grew}


def explained_keys(reading: dict[str, Any]) -> int:
    live_clients = sum(r["active_streams"] for r in reading["replicas"])
    return int(KEYS_PER_ANSWER * reading["answers_in_ttl_window"] + live_clients)


def run(plan: Plan, workdir: Path) -> dict[str, Any]:
    """The soak, judged: what main() writes, and what the CI test asserts on."""
    with run_stack(plan, workdir) as stack:
        result = uvloop.run(soak(plan, stack))
    result["verdict"] = judge(result)
    return result


def report_text(result: dict[str, Any]) -> str:
    traffic, machine = result["traffic"], result["machine"]
    lines = [
        f"soak: {traffic['seconds']:.0f} s of traffic, {traffic['answers_started']} answers"
        f" started, exchanges {traffic['exchanges']}",
        f"problems (not all failures): {traffic['problems'] or 'none'}",
        f"load averages {machine['loadavg_start']} -> {machine['loadavg_end']},"
        f" foreign busy {machine['foreign_busy_share']:.0%}",
        f"{'series':34} {'start':>9} {'end':>9} {'bound':>9}  bound is",
    ]
    for row in result["verdict"]["table"]:
        lines.append(
            f"{row['series']:34} {row['start']:9.1f} {row['end']:9.1f} {row['bound']:9.1f}"
            f"  {row['bound_is']}"
        )
    after = result["redis_after_ttl"]
    lines.append(
        f"redis after the TTL: {after['keys_left']} keys of ours"
        + (
            f" (empty {after['empty_after_s']} s after the traffic)"
            if not after["keys_left"]
            else ""
        )
    )
    grew = result["verdict"]["grew"]
    lines.append("GREW: " + "; ".join(grew) if grew else "nothing grew")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    defaults = Plan()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    return Plan(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    plan = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C: the services, redis-server and the stub are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        result = run(plan, Path(workdir))
    write_results(RESULTS, "soak", started_at, result)
    print(report_text(result))
    print(f"written to {result['written_to']}")
    sys.exit(1 if result["verdict"]["grew"] else 0)


if __name__ == "__main__":
    main()
