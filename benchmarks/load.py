"""Load benchmark: what users feel, each figure against baselines measured in the same run.

    uv run --frozen python -m benchmarks.load [--single-samples 50] [--streams 100] ...
    (./benchmarks/run.sh runs it with the defaults, about 15 minutes on 2 cores)

Processes, all on 127.0.0.1 and up for the whole run:
- the upstream stub (benchmarks/load_stub.py: OpenAI's chat-completions SSE,
  one scripted reply per scenario; its text has newlines, CR, CRLF, tabs,
  quotes, backslashes, markup, accents, CJK, emoji and U+2028);
- the service (`python -m qa_service serve`, openai provider, every setting
  at its default but the ones in `service_settings`);
- the chain relay (benchmarks/chain_relay.py: the same chain, `prompt |
  ChatOpenAI | StrOutputParser()`, relayed naively through sse-starlette),
  the baseline issue 12 compares against;
- this load generator: raw asyncio HTTP/1.1 on uvloop (no httpx, so that it
  costs its core little), one connection per stream.

benchmarks/bare_relay.py (httpx, no LangChain) is not a baseline here: it reads
lines with httpx's `aiter_lines`, which also splits at U+2028 and friends, so
with this text it drops the stream mid-answer.

Pinning: the service and the chain relay on core 0, the stub and the generator on
core 1 (os.sched_setaffinity, inherited at spawn). When that is impossible the
output and the JSON say so (`pinning.ok` false, and why).

Scenarios:
(a) 1 stream at a time: time to first text, median of `--single-samples`,
    targets interleaved; "added" is the median minus the stub's own median
    (time to its first content chunk, read directly).
(b) `--streams` concurrent streams (started at once) of `--tokens` tokens at
    `--rate` tokens/s each, `--rounds` rounds, targets interleaved: CPU-s per
    1,000 upstream tokens (process utime + stime, psutil), time to first text
    p50/p99, and each stream's duration over the stub's own median duration
    at the same concurrency (median and worst). Core 1's busy share (stub +
    generator CPU over wall time) is reported: near 100% the baseline itself
    is starved and the figures are suspect. So is "foreign": the largest share
    of either core used by processes outside the benchmark during a run (from
    /proc/stat), i.e. other jobs on the machine.
(d) as (b), with `--many-streams` streams: 200 x 200 tokens at 50 tokens/s is
    10,000 tokens/s offered, where issue 12 reads time to first text p99 and
    each stream's duration against the upstream's own.
(e) as (d), but arriving steadily instead of at once: one new stream every
    upstream duration / `--many-streams` seconds, for three upstream
    durations, so that about `--many-streams` are open at once (10,000
    tokens/s offered, what a service under that load sees; (d)'s burst adds
    every stream's set-up at the same moment). Figures are read from the
    streams started after the first duration (the ramp); CPU covers them all.
(c) `--hold-streams` streams held open by slow upstream replies (first text at
    once, then `--hold-seconds` of slow tokens): VmRSS from /proc/<pid>/status
    after a warm-up ("before"), then every 0.1 s while the streams run; growth
    per stream = (VmRSS at the last sample with the most streams open - before)
    / that number of streams. Answers stay in the service's memory after they
    end (resumable for QA_RESUME_TTL_SECONDS), so "max" and "after" are shown
    too. Both relay and service are measured, the relay first.

Exactness: every stream of every scenario (warm-ups included) must end with
its terminal event (`done`; `[DONE]` for the stub)
and its joined text must equal what the stub sent, byte for byte. Mismatches
are counted and listed (the first few); the run exits 1 if there are any.

Results: a table on stdout, and JSON in benchmarks/results/load-<timestamp>.json
and benchmarks/results/load.json (the latest), with load averages at start and
end, cpu count, Python version and the git commit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from tests.support.ports import free_port
from tests.support.service import REPO, run_service, service_env

from benchmarks.measure import cpu_seconds, percentile, source_tree, write_results

RESULTS = REPO / "benchmarks" / "results"
FAKE_KEY = "sk-bench-not-a-real-key"
SERVICE_CORE, LOAD_CORE = 0, 1
# Every wait has a deadline: a stream as a whole, and a process's start-up.
STREAM_DEADLINE = 120.0
START_DEADLINE = 30.0
# Above these shares of a core, the run says its figures are suspect.
FOREIGN_LIMIT, LOAD_CORE_LIMIT = 0.10, 0.85

# What the stub's pieces cycle through: everything that must arrive intact.
SAMPLES = [
    " Photosynthesis",
    " is",
    "\n",
    " naïve",
    " 糖",
    " 🌱",
    "\r\n",
    ' "quoted"',
    " back\\slash",
    "\t",
    " e\u0301",
    " <b>x</b>",
    "\u2028",
    "\r",
    " 👩\u200d🔬",
    " }{",
]
MARKERS = {"single": "mk-single", "load": "mk-load", "hold": "mk-hold"}
# (b) and (d): the same reply at two concurrencies (issue 12 reads CPU at the
# first, time to first text and stream duration at the second).
LOAD_SCENARIOS = {"b": "b_load", "d": "d_many", "e": "e_steady"}


def pieces(count: int) -> list[str]:
    return [SAMPLES[i % len(SAMPLES)] + (f"{i}" if i % 7 == 0 else "") for i in range(count)]


# ---------------------------------------------------------------- processes


@dataclass
class Target:
    name: str
    url: str
    pid: int
    kind: str  # "stub" | "service" | "chain_relay"


@dataclass
class Pinning:
    ok: bool
    detail: str
    affinity: dict[str, list[int]] = field(default_factory=dict)


def try_pin_self(core: int, pinning: Pinning) -> None:
    if not pinning.ok:
        return
    try:
        os.sched_setaffinity(0, {core})
    except OSError as exc:
        pinning.ok, pinning.detail = False, f"sched_setaffinity({core}) failed: {exc}"


def pin_load_generator(detail: str) -> Pinning:
    """This process on LOAD_CORE (children it spawns inherit it) when cores 0 and 1 are
    there to use; `detail` says where each process runs. Otherwise the Pinning says why not."""
    if (os.cpu_count() or 1) < 2 or not {SERVICE_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        return Pinning(False, f"cores {sorted(os.sched_getaffinity(0))} available, need 0 and 1")
    pinning = Pinning(True, detail)
    try_pin_self(LOAD_CORE, pinning)
    return pinning


@contextmanager
def spawned_on(core: int, pinning: Pinning) -> Iterator[None]:
    """Children spawned inside inherit `core`; afterwards this process is back on LOAD_CORE."""
    try_pin_self(core, pinning)
    try:
        yield
    finally:
        try_pin_self(LOAD_CORE, pinning)


def record_affinity(name: str, pid: int, pinning: Pinning) -> None:
    try:
        cores = sorted(os.sched_getaffinity(pid))
    except OSError as exc:
        cores = []
        pinning.detail += f"; affinity of {name} unreadable: {exc}"
    pinning.affinity[name] = cores
    expected = [LOAD_CORE] if name in ("stub", "load_generator") else [SERVICE_CORE]
    if pinning.ok and cores != expected:
        pinning.ok = False
        pinning.detail = f"{name} runs on cores {cores}, not {expected}"


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def run_stub(spec: dict[str, Any], python: str = sys.executable) -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(
        [python, "-m", "benchmarks.load_stub", json.dumps(spec)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = wait_line(process, START_DEADLINE)
        yield f"http://127.0.0.1:{int(line)}", process.pid
    finally:
        stop(process)
        process.stdout.close()  # unclosed, a test that runs it sees a ResourceWarning


@contextmanager
def run_helper(module: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A helper process that answers questions on its stdin (a counting stub, an
    OTLP sink): started, its URL from the port it prints first, stopped after."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(wait_line(process, START_DEADLINE))
        yield process, f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def ask_helper(process: subprocess.Popen[str], question: str) -> str:
    """A helper's one-line answer to a one-line question on its stdin."""
    assert process.stdin is not None
    process.stdin.write(question + "\n")
    process.stdin.flush()
    return wait_line(process, START_DEADLINE)


def wait_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first line a child prints, within `timeout` seconds."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RuntimeError(f"no port from the stub within {timeout}s")
    return process.stdout.readline()


@contextmanager
def run_relay(
    module: str,
    stub_url: str,
    workdir: Path,
    python: str = sys.executable,
    deadline: float = START_DEADLINE,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """A relay (chain_relay) on a free port, on `python`; `extra_env` over its environment."""
    port = free_port()
    env = service_env({"OPENAI_BASE_URL": f"{stub_url}/v1", "OPENAI_API_KEY": FAKE_KEY})
    env["PYTHONPATH"] = str(REPO)
    env.update(extra_env or {})
    with (workdir / f"{module.rsplit('.', 1)[-1]}-{port}.log").open("wb") as log:
        process = subprocess.Popen(
            [python, "-m", module, str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        give_up = time.monotonic() + deadline
        while not port_open(port):
            if process.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"{module} did not start (see {workdir})")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        stop(process)


def port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def service_settings(stub_url: str) -> dict[str, str]:
    return {
        "QA_PROVIDER": "openai",
        "OPENAI_API_KEY": FAKE_KEY,
        "OPENAI_BASE_URL": f"{stub_url}/v1",
        "QA_UPSTREAM_MAX_RETRIES": "0",
        "QA_LOG_LEVEL": "warning",
    }


# ---------------------------------------------------------------- the client


@dataclass
class Stream:
    target: str
    scenario: str
    opened: float = 0.0
    first_text: float | None = None
    ended: float | None = None
    text: str = ""
    outcome: str = "none"
    pieces: int = 0

    @property
    def ttft(self) -> float | None:
        return None if self.first_text is None else self.first_text - self.opened

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.opened


class SSEParser:
    """WHATWG line splitting (CRLF, LF, CR) over bytes; yields each event's data."""

    def __init__(self) -> None:
        self.buffer = b""
        self.data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self.buffer += chunk
        events: list[str] = []
        while True:
            cut = min((i for i in (self.buffer.find(b"\n"), self.buffer.find(b"\r")) if i >= 0),
                      default=-1)  # fmt: skip
            if cut < 0:
                return events
            if self.buffer[cut : cut + 1] == b"\r":
                if cut + 1 == len(self.buffer):
                    return events  # a CR at the end may be half of a CRLF
                end = cut + 2 if self.buffer[cut + 1 : cut + 2] == b"\n" else cut + 1
            else:
                end = cut + 1
            line, self.buffer = self.buffer[:cut].decode("utf-8"), self.buffer[end:]
            if not line:
                if self.data:
                    events.append("\n".join(self.data))
                    self.data = []
            elif line.startswith("data:"):
                value = line[5:]
                self.data.append(value[1:] if value.startswith(" ") else value)


async def http_stream(
    url: str, method: str, path: str, body: bytes | None, on_data: Callable[[bytes], bool]
) -> None:
    """One HTTP/1.1 request on its own connection; body bytes go to `on_data` as they
    arrive until it returns True (a terminal event) or the body ends."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        if body is not None:
            head += (
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Authorization: Bearer {FAKE_KEY}\r\n"
            )
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + (body or b""))
        status_and_headers = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = status_and_headers.decode("latin-1").split("\r\n")
        if status_line.split(" ")[1] != "200":
            # The error's JSON body (its stable code) is what says why.
            body = await reader.read(512)
            raise RuntimeError(f"HTTP {status_line}: {body.decode(errors='replace')}")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)
        }
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    return
                chunk = await reader.readexactly(size + 2)
                if on_data(chunk[:-2]):
                    return
        else:
            while chunk := await reader.read(65536):
                if on_data(chunk):
                    return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def one_stream(
    target: Target,
    scenario: str,
    marker: str,
    path: str | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> Stream:
    """One stream read to its end. A service's stream asks `/ai_write` for `marker`,
    or reads `path` (an answer's `/answers/{id}/events`); `on_event` sees each of
    its events as it arrives."""
    stream = Stream(target.name, scenario)
    parser = SSEParser()
    texts: list[str] = []

    def on_data(chunk: bytes) -> bool:
        now = time.perf_counter()
        for data in parser.feed(chunk):
            if target.kind == "stub":
                if data == "[DONE]":
                    stream.outcome = "done"
                    return True
                choices = json.loads(data)["choices"]
                piece = choices[0]["delta"].get("content") if choices else None
            else:
                event = json.loads(data)
                if on_event is not None:
                    on_event(event)
                piece = event.get("text")
                if "done" in event:
                    stream.outcome = "done"
                    return True
                if "error" in event:
                    stream.outcome = f"error:{event['error'].get('code')}"
                    return True
            if piece:
                if stream.first_text is None:
                    stream.first_text = now
                texts.append(piece)
                stream.pieces += 1
        return False

    stream.opened = time.perf_counter()
    try:
        async with asyncio.timeout(STREAM_DEADLINE):
            if target.kind == "stub":
                body = json.dumps(
                    {
                        "model": "gpt-4o-mini",
                        "stream": True,
                        "messages": [{"role": "user", "content": f"bench {marker}"}],
                    }
                ).encode()
                await http_stream(target.url, "POST", "/v1/chat/completions", body, on_data)
            else:
                path = path or f"/ai_write?query={marker}"
                await http_stream(target.url, "GET", path, None, on_data)
        if stream.outcome == "none":
            stream.outcome = "eof"  # ended without its terminal event
    except TimeoutError:
        stream.outcome = "timeout"
    except (OSError, RuntimeError, ValueError, asyncio.IncompleteReadError) as exc:
        stream.outcome = f"failed:{type(exc).__name__}:{exc}"
    stream.ended = time.perf_counter()
    stream.text = "".join(texts)
    return stream


class Ledger:
    """Every stream's exactness against what the stub sent."""

    def __init__(self, expected: dict[str, str]) -> None:
        self.expected = expected
        self.checked = 0
        self.mismatches: list[dict[str, Any]] = []
        self.by_scenario: dict[str, dict[str, int]] = {}

    def summary(self) -> dict[str, Any]:
        """What a report says about exactness."""
        return {
            "streams_checked": self.checked,
            "mismatches": sum(v["mismatches"] for v in self.by_scenario.values()),
            "by_scenario": self.by_scenario,
            "first_mismatches": self.mismatches,
        }

    def check(self, streams: list[Stream], marker_key: str) -> None:
        for stream in streams:
            self.checked += 1
            row = self.by_scenario.setdefault(stream.scenario, {"streams": 0, "mismatches": 0})
            row["streams"] += 1
            expected = self.expected[marker_key]
            if stream.outcome != "done" or stream.text != expected:
                row["mismatches"] += 1
                if len(self.mismatches) < 20:
                    at = next(
                        (
                            i
                            for i, (a, b) in enumerate(zip(stream.text, expected, strict=False))
                            if a != b
                        ),
                        min(len(stream.text), len(expected)),
                    )
                    self.mismatches.append(
                        {
                            "scenario": stream.scenario,
                            "target": stream.target,
                            "outcome": stream.outcome,
                            "chars": len(stream.text),
                            "expected_chars": len(expected),
                            "first_difference_at": at,
                        }
                    )


async def burst(target: Target, scenario: str, marker: str, count: int) -> list[Stream]:
    return list(await asyncio.gather(*(one_stream(target, scenario, marker) for _ in range(count))))


async def steady(
    target: Target, scenario: str, marker: str, count: int, stream_seconds: float
) -> list[Stream]:
    """About `count` streams open at once: one starts every `stream_seconds / count`
    seconds for three stream lengths. The first length's streams are the ramp,
    labelled `<scenario>_ramp` (checked for exactness, left out of the figures)."""
    loop = asyncio.get_running_loop()
    interval, start = stream_seconds / count, loop.time()
    started = []
    for i in range(3 * count):
        await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
        label = scenario if i >= count else f"{scenario}_ramp"
        started.append(asyncio.create_task(one_stream(target, label, marker)))
    return list(await asyncio.gather(*started))


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def core_busy_seconds() -> list[float]:
    """Busy seconds of each CPU since boot, from /proc/stat (all processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    busy = []
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            busy.append((user + nice + system + irq + softirq + steal) / tick)
    return busy


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# ---------------------------------------------------------------- scenarios


async def scenario_single(
    targets: list[Target], ledger: Ledger, samples: int, warmup: int
) -> dict[str, Any]:
    marker = MARKERS["single"]
    ttfts: dict[str, list[float]] = {t.name: [] for t in targets}
    for index in range(warmup + samples):
        for target in targets:  # interleaved, so drift hits every target alike
            stream = await one_stream(target, "a_single", marker)
            ledger.check([stream], "single")
            if index >= warmup and stream.ttft is not None:
                ttfts[target.name].append(stream.ttft)
    stub_median = statistics.median(ttfts["stub"]) * 1000
    result: dict[str, Any] = {}
    for name, values in ttfts.items():
        median = statistics.median(values) * 1000
        result[name] = {
            "samples": len(values),
            "ttft_median_ms": median,
            "ttft_p90_ms": percentile(values, 0.9) * 1000,
            "added_median_ms_over_stub": median - stub_median,
        }
    return result


async def scenario_load(
    targets: list[Target],
    stub_pid: int,
    ledger: Ledger,
    args: argparse.Namespace,
    count: int,
    scenario: str,
) -> dict[str, Any]:
    """`count` concurrent streams of the load reply, `args.rounds` rounds per target."""
    marker = MARKERS["load"]
    nominal_duration = args.first_delay + (args.tokens - 1) / args.rate
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    streams: dict[str, list[Stream]] = {t.name: [] for t in targets}
    for target in targets:  # warm-up: pools, imports, caches
        ledger.check(await burst(target, "b_warmup", marker, 4), "load")
    for _ in range(args.rounds):
        for target in targets:
            await asyncio.sleep(args.settle)
            cpu0, stub0, own0 = cpu_seconds(target.pid), cpu_seconds(stub_pid), own_cpu()
            cores0, wall0 = core_busy_seconds(), time.perf_counter()
            if scenario == LOAD_SCENARIOS["e"]:
                done = await steady(target, scenario, marker, count, nominal_duration)
            else:
                done = await burst(target, scenario, marker, count)
            await asyncio.sleep(args.settle)  # work the process does after the last byte
            wall = time.perf_counter() - wall0
            cpu = cpu_seconds(target.pid) - cpu0
            load_core = cpu_seconds(stub_pid) - stub0 + own_cpu() - own0
            cores = [b - a for a, b in zip(cores0, core_busy_seconds(), strict=True)]
            ours = {SERVICE_CORE: 0.0 if target.kind == "stub" else cpu, LOAD_CORE: load_core}
            ledger.check(done, "load")
            streams[target.name] += [s for s in done if s.scenario == scenario]
            runs[target.name].append(
                {
                    "cpu_s": cpu,
                    "wall_s": wall,
                    "load_core_busy": load_core / (wall - args.settle),
                    # Core time spent by processes not in this benchmark (other
                    # jobs on the machine), as a share of the run's wall time.
                    "foreign_busy": {
                        f"core{core}": max(0.0, cores[core] - ours[core]) / wall
                        for core in (SERVICE_CORE, LOAD_CORE)
                        if core < len(cores)
                    },
                    "complete": sum(s.outcome == "done" for s in done),
                }
            )
    stub_durations = [s.duration for s in streams["stub"] if s.duration is not None]
    stub_median_duration = statistics.median(stub_durations)
    result: dict[str, Any] = {
        "streams": count,
        "tokens_per_stream": args.tokens,
        "rate_tokens_per_s": args.rate,
        "first_delay_s": args.first_delay,
        "rounds": args.rounds,
        "nominal_upstream_duration_s": nominal_duration,
        "stub_median_duration_s": stub_median_duration,
    }
    for name, done in streams.items():
        ttfts = [s.ttft for s in done if s.ttft is not None]
        ratios = [s.duration / stub_median_duration for s in done if s.duration is not None]
        tokens = sum(r["complete"] for r in runs[name]) * args.tokens
        cpu = sum(r["cpu_s"] for r in runs[name])
        result[name] = {
            "ttft_p50_ms": percentile(ttfts, 0.5) * 1000,
            "ttft_p90_ms": percentile(ttfts, 0.9) * 1000,
            "ttft_p99_ms": percentile(ttfts, 0.99) * 1000,
            "ttft_max_ms": max(ttfts) * 1000,
            "duration_ratio_median": statistics.median(ratios),
            "duration_ratio_worst": max(ratios),
            "upstream_tokens": tokens,
            "cpu_s": cpu,
            "cpu_s_per_1000_tokens": cpu / tokens * 1000 if tokens else None,
            "load_core_busy_max": max(r["load_core_busy"] for r in runs[name]),
            "foreign_busy_max": max(
                (v for r in runs[name] for v in r["foreign_busy"].values()), default=0.0
            ),
            "runs": runs[name],
        }
    result["stub"]["note"] = "cpu_s here is the stub's own CPU"
    relay = result["chain_relay"]["cpu_s_per_1000_tokens"]
    for name in ("service_base", "service"):
        ours = result.get(name, {}).get("cpu_s_per_1000_tokens")
        # Only when both completed streams: otherwise the exactness report says why not.
        if relay and ours:
            result[f"cpu_ratio_{name}_to_chain_relay"] = ours / relay
    return result


async def scenario_hold(
    targets: list[Target], ledger: Ledger, args: argparse.Namespace
) -> dict[str, Any]:
    result: dict[str, Any] = {"streams": args.hold_streams, "hold_seconds": args.hold_seconds}
    for target in targets:
        result[target.name] = await hold_one(target, ledger, args.hold_streams)
    return result


async def hold_one(target: Target, ledger: Ledger, count: int) -> dict[str, Any]:
    """VmRSS before, and at the last sample that saw the most streams open at once."""
    # Warm-up, then "before": the process as it is between bursts.
    for _ in range(2):
        ledger.check(await burst(target, "c_warmup", MARKERS["single"], 10), "single")
    await asyncio.sleep(1.0)
    before = statistics.median([vm_rss_kb(target.pid) for _ in range(3)])
    state = {"open": 0}
    samples: list[tuple[float, int, int]] = []  # (seconds, streams open, VmRSS kB)
    started = time.perf_counter()

    async def tracked() -> Stream:
        state["open"] += 1
        try:
            return await one_stream(target, "c_hold", MARKERS["hold"])
        finally:
            state["open"] -= 1

    async def sample_rss(stop: asyncio.Event) -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - started, state["open"], vm_rss_kb(target.pid)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(stop_sampling))
    try:
        done = list(await asyncio.gather(*(tracked() for _ in range(count))))
    finally:
        stop_sampling.set()
        await asyncio.wait_for(sampler, 5)
    ledger.check(done, "hold")
    await asyncio.sleep(1.0)
    most_open = max(open_ for _, open_, _ in samples)
    at_s, _, rss_full = [s for s in samples if s[1] == most_open][-1]
    return {
        "rss_before_mb": before / 1024,
        "rss_at_most_open_mb": rss_full / 1024,
        "most_open": most_open,
        "most_open_until_s": at_s,
        "rss_max_mb": max(rss for _, _, rss in samples) / 1024,
        "rss_after_mb": vm_rss_kb(target.pid) / 1024,
        "growth_mb_per_stream": (rss_full - before) / 1024 / most_open,
        "complete": sum(s.outcome == "done" for s in done),
        "ttft_p99_ms": percentile([s.ttft for s in done if s.ttft is not None] or [0.0], 0.99)
        * 1000,
    }


# ---------------------------------------------------------------- report


def git_commit() -> dict[str, Any]:
    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def report_start(args: argparse.Namespace, started_at: datetime, **more: Any) -> dict[str, Any]:
    """What every result JSON starts with: when, the arguments, the commit, the machine
    and its load average now (the caller adds `loadavg_end`), then `more`."""
    return {
        "started_at": started_at.isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "git": git_commit(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": list(os.getloadavg()),
        },
        **more,
    }


def report_end(report: dict[str, Any]) -> list[str]:
    """What every report's table ends with: exactness (the Ledger's summary, its
    first mismatches), whether the run was cut short, its wall time and JSON."""
    exact = report["exactness"]
    lines = [
        f"\nexactness: {exact['streams_checked']} streams checked, {exact['mismatches']} mismatches"
    ]
    lines += [f"  MISMATCH {mismatch}" for mismatch in exact["first_mismatches"]]
    if report.get("unfinished"):
        lines.append(f"UNFINISHED: {report['unfinished']}")
    lines.append(f"wall time {report['wall_s']:.0f} s; written to {report['written_to']}")
    return lines


def lift_open_files() -> None:
    """The soft limit on open files up to the hard one (children inherit it): a
    burst of hundreds of streams is twice as many sockets in a service."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def load_lines(key: str, load: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    arrival = "open at once in steady state" if key == "e" else "concurrent streams started at once"
    lines = [
        f"\n({key}) {load['streams']} {arrival} x {load['tokens_per_stream']} tokens at"
        f" {load['rate_tokens_per_s']:g} tok/s, {load['rounds']} rounds"
        f" (upstream's own duration: {load['stub_median_duration_s']:.2f} s median,"
        f" nominal {load['nominal_upstream_duration_s']:.2f} s)",
        f"  {'':12} {'CPU-s/1k tok':>12} {'TTFT p50':>9} {'TTFT p99':>9}"
        f" {'dur/upstream med':>16} {'worst':>6} {'core1 busy':>10} {'foreign':>7}",
    ]
    for name in names:
        row = load[name]
        per_token = row["cpu_s_per_1000_tokens"]
        cpu = "-" if name == "stub" or per_token is None else f"{per_token:.3f}"
        lines.append(
            f"  {name:12} {cpu:>12} {row['ttft_p50_ms']:9.1f} {row['ttft_p99_ms']:9.1f}"
            f" {row['duration_ratio_median']:16.3f} {row['duration_ratio_worst']:6.3f}"
            f" {row['load_core_busy_max']:10.0%} {row['foreign_busy_max']:7.0%}"
        )
    for name in ("service_base", "service"):
        if f"cpu_ratio_{name}_to_chain_relay" in load:
            lines.append(
                f"  {name} / chain relay CPU per token:"
                f" {load[f'cpu_ratio_{name}_to_chain_relay']:.2f}x"
            )
    lines.append(f"  (stub's own CPU: {load['stub']['cpu_s_per_1000_tokens']:.3f} CPU-s/1k tok)")
    return lines


def report_text(report: dict[str, Any]) -> str:
    machine, pinning = report["machine"], report["pinning"]
    lines = [
        f"\nqa-service load benchmark  {report['started_at']}"
        f"  commit {report['git']['commit'][:10]}{' (dirty)' if report['git']['dirty'] else ''}",
        f"  {machine['cpu_count']} CPUs, Python {machine['python']}, load average "
        f"{' '.join(f'{x:.2f}' for x in machine['loadavg_start'])} at start, "
        f"{' '.join(f'{x:.2f}' for x in machine['loadavg_end'])} at end",
        "  other processes (not this benchmark's) used "
        + ", ".join(
            f"{core} {share:.0%}"
            for core, share in machine.get("foreign_busy_whole_run", {}).items()
        )
        + " over the run",
        f"  pinning: {'ok' if pinning['ok'] else 'NOT PINNED'} ({pinning['detail']}) "
        + " ".join(f"{k}={v}" for k, v in pinning["affinity"].items()),
    ]
    names = (
        "stub",
        "chain_relay",
        *(n for n in ("service_base", "service") if n in report["targets"]),
    )
    if single := report["scenarios"].get("a_single"):
        lines += [
            "\n(a) 1 stream: time to first text, ms (median; added = median - stub's median)",
            f"  {'':12} {'median':>8} {'p90':>8} {'added':>8}   n",
        ]
        for name in names:
            row = single[name]
            lines.append(
                f"  {name:12} {row['ttft_median_ms']:8.1f} {row['ttft_p90_ms']:8.1f}"
                f" {row['added_median_ms_over_stub']:+8.1f}   {row['samples']}"
            )
    for key, name in LOAD_SCENARIOS.items():
        if (load := report["scenarios"].get(name)) is not None:
            lines += load_lines(key, load, names)
    if hold := report["scenarios"].get("c_hold"):
        lines += [
            f"\n(c) {hold['streams']} streams held open"
            f" ({hold['hold_seconds']:g} s of slow tokens each): VmRSS, MB",
            f"  {'':12} {'before':>8} {'all open':>8} {'open':>5} {'MB/stream':>9}"
            f" {'max':>8} {'after':>8} {'complete':>8} {'TTFT p99':>9}",
        ]
        for name in ("chain_relay", *(n for n in ("service_base", "service") if n in hold)):
            row = hold[name]
            lines.append(
                f"  {name:12} {row['rss_before_mb']:8.1f} {row['rss_at_most_open_mb']:8.1f}"
                f" {row['most_open']:5d} {row['growth_mb_per_stream']:9.3f}"
                f" {row['rss_max_mb']:8.1f} {row['rss_after_mb']:8.1f} {row['complete']:8d}"
                f" {row['ttft_p99_ms']:9.1f}"
            )
    exact = report["exactness"]
    lines.append(
        f"\nexactness: {exact['streams_checked']} streams checked,"
        f" {exact['mismatches']} mismatches "
        + " ".join(f"{k}={v['mismatches']}/{v['streams']}" for k, v in exact["by_scenario"].items())
    )
    for mismatch in exact["first_mismatches"]:
        lines.append(f"  MISMATCH {mismatch}")
    if report.get("unfinished"):
        lines.append(f"UNFINISHED: {report['unfinished']}")
    for warning in report["warnings"]:
        lines.append(f"WARNING: {warning}")
    lines.append(f"wall time {report['wall_s']:.0f} s; written to {report['written_to']}")
    return "\n".join(lines)


def warnings(report: dict[str, Any]) -> list[str]:
    """What makes this run's figures suspect."""
    found = []
    if not report["pinning"]["ok"]:
        found.append(f"not pinned: {report['pinning']['detail']}")
    foreign = report["machine"].get("foreign_busy_whole_run", {})
    if any(share > FOREIGN_LIMIT for share in foreign.values()):
        shares = ", ".join(f"{core} {share:.0%}" for core, share in foreign.items())
        found.append(
            f"other processes used {shares} of the cores over the run: the machine was"
            " not quiet, and times (more than CPU per token) are inflated"
        )
    for key, scenario in LOAD_SCENARIOS.items():
        load = report["scenarios"].get(scenario, {})
        for name in ("stub", "chain_relay", "service_base", "service"):
            if name in load and load[name]["load_core_busy_max"] > LOAD_CORE_LIMIT:
                found.append(
                    f"({key}) {name}: the stub and load generator kept core {LOAD_CORE}"
                    f" {load[name]['load_core_busy_max']:.0%} busy: the baseline side is short"
                    " of CPU"
                )
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single-samples", type=int, default=50, help="(a) samples per target")
    parser.add_argument("--streams", type=int, default=100, help="(b) concurrent streams")
    parser.add_argument("--many-streams", type=int, default=200, help="(d, e) concurrent streams")
    parser.add_argument("--tokens", type=int, default=200, help="(b, d) tokens per stream")
    parser.add_argument("--rate", type=float, default=50.0, help="(b) tokens/s per stream")
    parser.add_argument("--first-delay", type=float, default=0.05, help="(a, b) stub's TTFT, s")
    parser.add_argument("--rounds", type=int, default=2, help="(b) rounds per target")
    parser.add_argument("--settle", type=float, default=0.5, help="(b) pause around each run, s")
    parser.add_argument("--hold-streams", type=int, default=400, help="(c) streams held open")
    parser.add_argument("--hold-seconds", type=float, default=20.0, help="(c) each one's length")
    parser.add_argument(
        "--baseline-src",
        type=source_tree,
        help="also measure the qa_service package in this src/ directory (earlier code, e.g."
        " `git archive COMMIT src | tar -x -C DIR`) as service_base, in the same run",
    )
    parser.add_argument(
        "--scenarios",
        default="a,b,c,d,e",
        help="which to run, comma-separated (default a,b,c,d,e)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started_wall, started_at = time.perf_counter(), datetime.now(UTC)
    report = report_start(args, started_at, scenarios={})
    # 400 streams are 800+ sockets in a relay.
    lift_open_files()

    pinning = pin_load_generator(
        f"service and chain relay on core {SERVICE_CORE}, stub and load generator on {LOAD_CORE}"
    )

    spec = {
        MARKERS["single"]: {
            "pieces": pieces(20),
            "first_delay": args.first_delay,
            "piece_delay": 0.005,
        },
        MARKERS["load"]: {
            "pieces": pieces(args.tokens),
            "first_delay": args.first_delay,
            "piece_delay": 1 / args.rate,
        },
        MARKERS["hold"]: {
            "pieces": pieces(20),
            "first_delay": 0.0,
            "piece_delay": args.hold_seconds / 20,
        },
    }
    ledger = Ledger({key: "".join(spec[m]["pieces"]) for key, m in MARKERS.items()})
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = RESULTS / "work"
    workdir.mkdir(exist_ok=True)
    wanted = set(args.scenarios.split(","))
    with ExitStack() as stack:
        stub_url, stub_pid = stack.enter_context(run_stub(spec))
        with spawned_on(SERVICE_CORE, pinning):
            chain_url, chain_pid = stack.enter_context(
                run_relay("benchmarks.chain_relay", stub_url, workdir)
            )
            service = stack.enter_context(run_service(service_settings(stub_url), workdir))
        stub = Target("stub", stub_url, stub_pid, "stub")
        chain = Target("chain_relay", chain_url, chain_pid, "chain_relay")
        qa = Target("service", service.url, service.process.pid, "service")
        services = [qa]
        if args.baseline_src is not None:
            # Earlier code in the same run: its figures sit beside today's.
            with spawned_on(SERVICE_CORE, pinning):
                settings = {**service_settings(stub_url), "PYTHONPATH": str(args.baseline_src)}
                base = stack.enter_context(run_service(settings, workdir))
            services.insert(0, Target("service_base", base.url, base.process.pid, "service"))
        report["targets"] = [t.name for t in (stub, chain, *services)]
        for target in (stub, chain, *services):
            record_affinity(target.name, target.pid, pinning)
        record_affinity("load_generator", os.getpid(), pinning)

        async def run_all() -> None:
            # (c) first, while the processes are fresh: RSS growth is then not
            # hidden by memory the allocator kept from earlier scenarios.
            if "c" in wanted:
                report["scenarios"]["c_hold"] = await scenario_hold(
                    [chain, *services], ledger, args
                )
            if "a" in wanted:
                report["scenarios"]["a_single"] = await scenario_single(
                    [stub, chain, *services], ledger, args.single_samples, warmup=3
                )
            for key, count in (
                ("b", args.streams),
                ("d", args.many_streams),
                ("e", args.many_streams),
            ):
                if key in wanted:
                    name = LOAD_SCENARIOS[key]
                    report["scenarios"][name] = await scenario_load(
                        [stub, chain, *services], stub_pid, ledger, args, count, name
                    )

        def ours() -> dict[int, float]:
            return {
                SERVICE_CORE: cpu_seconds(chain.pid) + sum(cpu_seconds(t.pid) for t in services),
                LOAD_CORE: cpu_seconds(stub.pid) + own_cpu(),
            }

        ours0, cores0, wall0 = ours(), core_busy_seconds(), time.perf_counter()
        try:
            uvloop.run(run_all())
        except (KeyboardInterrupt, RuntimeError, OSError) as exc:
            report["unfinished"] = (
                f"{type(exc).__name__}: {exc}; finished: {list(report['scenarios'])}"
            )
        ours1, cores1, wall = ours(), core_busy_seconds(), time.perf_counter() - wall0
        # Other jobs on the machine while the scenarios ran, as a share of each core.
        report["machine"]["foreign_busy_whole_run"] = {
            f"core{core}": max(0.0, cores1[core] - cores0[core] - (ours1[core] - ours0[core]))
            / wall
            for core in (SERVICE_CORE, LOAD_CORE)
            if core < len(cores0)
        }

    report["pinning"] = vars(pinning)
    report["exactness"] = ledger.summary()
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["warnings"] = warnings(report)
    report["wall_s"] = time.perf_counter() - started_wall
    write_results(RESULTS, "load", started_at, report)
    print(report_text(report))
    if report["exactness"]["mismatches"] or report.get("unfinished"):
        sys.exit(1)


if __name__ == "__main__":
    main()
