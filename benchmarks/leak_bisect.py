"""Bisect the soak's RSS growth: one replica, one kind of traffic, a few minutes.

    uv run --frozen python -m benchmarks.leak_bisect --kind complete [--memory] [--minutes 3]

One service (over redis-server, or the in-process store with --memory), the
upstream stub, and benchmarks/soak_traffic.py's workers doing only `--kind`
(or every kind, `--kind all`). Every `--sample-seconds`, from outside: RSS,
threads, the anonymous mappings' Rss (not [heap]) and how many there are; and,
from inside (benchmarks/leak_probe/sitecustomize.py, via PYTHONPATH), pymalloc's
arenas, allocated blocks and gc-tracked objects. One line per sample on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import uvloop
from tests.support.redis_server import run_redis
from tests.support.service import run_services

from benchmarks import soak_traffic
from benchmarks.load import run_stub, service_settings
from benchmarks.soak_traffic import SHORT, Traffic, exchange, stub_spec

PROBE = Path(__file__).parent / "leak_probe"


def mappings(pid: int) -> dict[str, float]:
    """Rss (MB) of the anonymous mappings (no path, not [heap]) and of [heap]; their count."""
    anon = heap = 0
    count = 0
    name = ""
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                name = parts[5] if len(parts) > 5 else ""
                if not name:
                    count += 1
            elif first == "Rss:":
                kb = int(line.split()[1])
                if name == "":
                    anon += kb
                elif name == "[heap]":
                    heap += kb
    return {"anon_mb": anon / 1024, "heap_mb": heap / 1024, "anon_maps": count}


def outside(pid: int) -> dict[str, Any]:
    process = psutil.Process(pid)
    return {
        "rss_mb": round(process.memory_info().rss / 2**20, 1),
        "threads": process.num_threads(),
        **{k: round(v, 1) for k, v in mappings(pid).items()},
    }


def last_probe(path: Path) -> dict[str, Any]:
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else {}


async def drive(url: str, args: argparse.Namespace, pid: int, probe_out: Path) -> None:
    if args.kind != "all":
        soak_traffic.KINDS = {args.kind: 1}
    await exchange(url, "GET", f"/ai_write?query={SHORT}")
    traffic = Traffic([url, url], args.workers)
    stop = asyncio.Event()
    running = asyncio.create_task(traffic.run(stop))
    began = time.monotonic()
    while time.monotonic() - began < args.minutes * 60 and not running.done():
        await asyncio.sleep(args.sample_seconds)
        probe = last_probe(probe_out)
        probe.pop("at", None)
        row = {"t": round(time.monotonic() - began), "answers": len(traffic.tally.started_at)}
        print(json.dumps({**row, **outside(pid), **probe}), flush=True)
    stop.set()
    await running
    print(json.dumps({"traffic": traffic.tally.done, "problems": traffic.tally.problems}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", default="all")
    parser.add_argument("--memory", action="store_true", help="the in-process store")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--sample-seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--env", action="append", default=[], help="NAME=value for the service")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        probe_out = workdir / "probe.jsonl"
        stub_url, _ = stack.enter_context(run_stub(stub_spec()))
        settings = {
            **service_settings(stub_url),
            "QA_RESUME_TTL_SECONDS": "20",
            "QA_RESUME_GRACE_SECONDS": "2",
            "QA_CLIENT_MAX_STREAMS": "2",
            "PYTHONPATH": str(PROBE),
            "QA_PROBE_OUT": str(probe_out),
            "QA_PROBE_SECONDS": str(max(1.0, args.sample_seconds - 2)),
            **dict(pair.split("=", 1) for pair in args.env),
        }
        if not args.memory:
            settings["QA_REDIS_URL"] = stack.enter_context(run_redis(workdir)).url
        (service,) = stack.enter_context(run_services([settings], workdir))
        print(json.dumps({"kind": args.kind, "memory": args.memory, "env": args.env}), flush=True)
        uvloop.run(drive(service.url, args, service.process.pid, probe_out))


if __name__ == "__main__":
    sys.exit(main())
