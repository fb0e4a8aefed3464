"""Relay benchmark: what the service adds over the provider, in latency and CPU.

    uv run python -m benchmarks.relay            (./benchmarks/run.sh does the same)

Three processes on 127.0.0.1, as in production: the upstream stub (speaking
OpenAI's chat-completions SSE), the service (openai provider), and this load
generator. Two measurements, each with its baseline from the same run:

1. Time to first text. The baseline is the stub's own: the time until its first
   content chunk, read directly. The service's figure is the time until the
   first `text` event. Both are taken at 1 and at 100 concurrent streams, and
   the difference is what the service adds.
2. CPU seconds per 1,000 tokens relayed, read from the service process's
   rusage. The baseline is a bare relay (benchmarks/bare_relay.py: httpx in,
   `data: {"text"}` out, no LangChain), run under the same uvicorn.

Figures go to stdout and to benchmarks/results/relay.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from tests.support.service import REPO, run_service, service_env

from benchmarks.measure import cpu_seconds, percentile

RESULTS = REPO / "benchmarks" / "results"
FAKE_KEY = "sk-bench-not-a-real-key"


@contextmanager
def run_stub(pieces: int, first_delay: float, piece_delay: float) -> Iterator[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.upstream_stub",
            f"--pieces={pieces}",
            f"--first-delay={first_delay}",
            f"--piece-delay={piece_delay}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


@contextmanager
def run_bare_relay(stub_url: str, workdir: Path) -> Iterator[tuple[str, int]]:
    from tests.support.ports import free_port

    port = free_port()
    env = {**os.environ, "OPENAI_BASE_URL": f"{stub_url}/v1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bare_relay", str(port)], cwd=REPO, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/nothing", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait()


@contextmanager
def run_qa_service(stub_url: str, workdir: Path) -> Iterator[tuple[str, int]]:
    settings = {
        "QA_PROVIDER": "openai",
        "OPENAI_API_KEY": FAKE_KEY,
        "OPENAI_BASE_URL": f"{stub_url}/v1",
        "QA_UPSTREAM_MAX_RETRIES": "0",
        "QA_LOG_LEVEL": "warning",
    }
    assert service_env(settings)  # same clean environment as the tests
    with run_service(settings, workdir) as service:
        yield service.url, service.process.pid


async def first_text_via_service(client: httpx.AsyncClient, url: str) -> float:
    started = time.perf_counter()
    elapsed = None
    async with client.stream("GET", f"{url}/ai_write", params={"query": "bench"}) as response:
        async for line in response.aiter_lines():  # to the end, as a real client would
            if elapsed is None and line.startswith('data: {"text"'):
                elapsed = time.perf_counter() - started
    if elapsed is None:
        raise RuntimeError("no text event")
    return elapsed


async def first_text_from_stub(client: httpx.AsyncClient, stub_url: str) -> float:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "bench"}]}
    started = time.perf_counter()
    async with client.stream("POST", f"{stub_url}/v1/chat/completions", json=body) as response:
        elapsed = None
        async for line in response.aiter_lines():
            if elapsed is None and line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    elapsed = time.perf_counter() - started
    if elapsed is None:
        raise RuntimeError("no content chunk")
    return elapsed


async def sample(probe: Any, target: str, concurrency: int, rounds: int) -> list[float]:
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await probe(client, target)  # warm-up: imports, pools, caches
        samples: list[float] = []
        for _ in range(rounds):
            samples += await asyncio.gather(*(probe(client, target) for _ in range(concurrency)))
    return samples


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = percentile(ordered, 0.99)
    return {"median_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000}


async def stream_all(url: str, streams: int, concurrency: int) -> int:
    """Stream `streams` answers, `concurrency` at a time; return text events seen."""
    limits = httpx.Limits(max_connections=concurrency + 10)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one() -> int:
            async with semaphore:
                count = 0
                async with client.stream(
                    "GET", f"{url}/ai_write", params={"query": "bench"}
                ) as response:
                    async for line in response.aiter_lines():
                        if line.startswith('data: {"text"'):
                            count += 1
                return count

        return sum(await asyncio.gather(*(one() for _ in range(streams))))


def cpu_per_1000_tokens(url: str, pid: int, streams: int, concurrency: int) -> dict[str, float]:
    asyncio.run(stream_all(url, 4, 4))  # warm-up
    before, started = cpu_seconds(pid), time.perf_counter()
    tokens = asyncio.run(stream_all(url, streams, concurrency))
    cpu, wall = cpu_seconds(pid) - before, time.perf_counter() - started
    return {
        "tokens": tokens,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_s_per_1000_tokens": cpu / tokens * 1000,
        "tokens_per_cpu_second": tokens / cpu,
    }


def measure_ttft(workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    # A 50 ms first token and 10 ms between tokens: a light, realistic stream.
    with (
        run_stub(pieces=20, first_delay=0.05, piece_delay=0.01) as stub_url,
        run_qa_service(stub_url, workdir) as (service_url, _),
    ):
        for concurrency, rounds in ((1, 60), (100, 4)):
            stub = percentiles(
                asyncio.run(sample(first_text_from_stub, stub_url, concurrency, rounds))
            )
            service = percentiles(
                asyncio.run(sample(first_text_via_service, service_url, concurrency, rounds))
            )
            results[f"concurrency_{concurrency}"] = {
                "stub": stub,
                "service": service,
                "added_median_ms": service["median_ms"] - stub["median_ms"],
                "added_p99_ms": service["p99_ms"] - stub["p99_ms"],
                "samples": concurrency * rounds,
            }
    return results


def measure_cpu(workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    # No delays: the stub writes 500 tokens as fast as the relay reads them.
    with run_stub(pieces=500, first_delay=0, piece_delay=0) as stub_url:
        with run_bare_relay(stub_url, workdir) as (url, pid):
            results["bare_relay"] = cpu_per_1000_tokens(url, pid, streams=60, concurrency=10)
        with run_qa_service(stub_url, workdir) as (url, pid):
            results["service"] = cpu_per_1000_tokens(url, pid, streams=60, concurrency=10)
    results["ratio_service_to_bare_relay"] = (
        results["service"]["cpu_s_per_1000_tokens"] / results["bare_relay"]["cpu_s_per_1000_tokens"]
    )
    return results


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "work"
    workdir.mkdir(exist_ok=True)
    report = {"ttft": measure_ttft(workdir), "cpu": measure_cpu(workdir)}
    (RESULTS / "relay.json").write_text(json.dumps(report, indent=2))

    print("\nTime to first text (ms): stub alone vs through the service")
    for name, row in report["ttft"].items():
        stub, service = row["stub"], row["service"]
        print(
            f"  {name:16} stub median {stub['median_ms']:7.1f} p99 {stub['p99_ms']:7.1f}"
            f" | service median {service['median_ms']:7.1f} p99 {service['p99_ms']:7.1f}"
            f" | added median {row['added_median_ms']:6.1f} p99 {row['added_p99_ms']:6.1f}"
            f"  (n={row['samples']})"
        )
    cpu = report["cpu"]
    print("\nCPU per 1,000 tokens relayed (service process only)")
    for name in ("bare_relay", "service"):
        row = cpu[name]
        print(
            f"  {name:12} {row['cpu_s_per_1000_tokens']:.3f} CPU-s/1k tokens"
            f"  ({row['tokens_per_cpu_second']:.0f} tokens per CPU-second, {row['tokens']} tokens)"
        )
    print(f"  service / bare relay: {cpu['ratio_service_to_bare_relay']:.2f}x")
    print(f"\nwritten to {RESULTS / 'relay.json'}")


if __name__ == "__main__":
    main()
