"""Where the Redis store's extra CPU goes: py-spy on A (Redis) and M (in-process)
through benchmarks/redis_log.py's rounds (`--profile`), and the difference per 1,000 tokens.

Both services run the same rounds, so what A spends above M, by package and by
function, is what the Redis store costs. py-spy runs `--nonblocking` (it never
pauses the service) and leaves idle samples out, so samples / rate is CPU time.
It runs on the load core, so a profiled run's CPU ratios are not the bar's:
take those from a run without `--profile`.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.service import REPO

from benchmarks.load import Target
from benchmarks.profile import _no_line, package_of, read_collapsed

SAMPLE_RATE = 200  # samples per second


@contextmanager
def recording(targets: dict[str, Target], raw_prefix: Path) -> Iterator[dict[str, Path]]:
    """py-spy on each target while the block runs; yields each one's raw stacks file."""
    files = {name: raw_prefix.with_name(f"{raw_prefix.name}-{name}.stacks.txt") for name in targets}
    spies = [
        subprocess.Popen(
            [
                *(str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking"),
                *("--pid", str(target.pid), "--rate", str(SAMPLE_RATE), "--format", "raw"),
                *("--output", str(files[name])),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, target in targets.items()
    ]
    try:
        yield files
    finally:
        for spy in spies:
            spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for spy in spies:
            spy.wait(30)


def _cpu_by(stacks: Counter[tuple[str, ...]], key: str) -> Counter[str]:
    """Samples by the innermost frame's package (`package`) or function (`function`)."""
    found: Counter[str] = Counter()
    for stack, count in stacks.items():
        leaf = stack[-1]
        found[package_of(leaf) if key == "package" else _no_line(leaf)] += count
    return found


def compare(files: dict[str, Path], tokens: dict[str, int], top: int = 15) -> dict[str, Any]:
    """CPU-ms per 1,000 tokens on each store, and Redis's excess, by package and function.

    `files` and `tokens` are keyed "redis" and "memory"."""
    stacks = {store: read_collapsed(path) for store, path in files.items()}

    def per_1000(samples: float, store: str) -> float:
        return round(samples / SAMPLE_RATE / tokens[store] * 1e6, 2) if tokens[store] else 0.0

    result: dict[str, Any] = {
        "sample_rate": SAMPLE_RATE,
        "tokens": tokens,
        "raw_stacks": {store: str(path.relative_to(REPO)) for store, path in files.items()},
        "cpu_ms_per_1000_tokens": {
            store: per_1000(sum(s.values()), store) for store, s in stacks.items()
        },
    }
    for key in ("package", "function"):
        redis, memory = _cpu_by(stacks["redis"], key), _cpu_by(stacks["memory"], key)
        excess = {
            name: per_1000(redis[name], "redis") - per_1000(memory[name], "memory")
            for name in set(redis) | set(memory)
        }
        ranked = sorted(excess.items(), key=lambda kv: -abs(kv[1]))[:top]
        result[f"excess_by_{key}_ms_per_1000_tokens"] = {k: round(v, 2) for k, v in ranked}
    # Everything under the Redis store's own modules and the redis client, inclusive.
    # py-spy names a frame "function (redis/asyncio/client.py:123)": the path is
    # relative to site-packages, so "/redis/" alone missed every redis-py frame.
    for store, s in stacks.items():
        inside = sum(
            count
            for stack, count in s.items()
            if any("qa_service/stores/" in f or "(redis/" in f or "/redis/" in f for f in stack)
        )
        result[f"stores_and_redis_client_inclusive_ms_per_1000_tokens_{store}"] = per_1000(
            inside, store
        )
    return result


def compare_text(label: str, found: dict[str, Any]) -> list[str]:
    cpu = found["cpu_ms_per_1000_tokens"]
    lines = [
        f"\n  {label}, profiled CPU-ms per 1k tokens: Redis (A) {cpu['redis']:.1f},"
        f" in-process (M) {cpu['memory']:.1f}; under stores/ or redis-py, inclusive:"
        f" A {found['stores_and_redis_client_inclusive_ms_per_1000_tokens_redis']:.1f},"
        f" M {found['stores_and_redis_client_inclusive_ms_per_1000_tokens_memory']:.1f}",
        "    A's excess over M by package (self), ms per 1k tokens: "
        + ", ".join(
            f"{k} {v:+.1f}" for k, v in found["excess_by_package_ms_per_1000_tokens"].items()
        ),
        "    by function (self):",
    ]
    lines += [
        f"      {v:+7.1f}  {k}" for k, v in found["excess_by_function_ms_per_1000_tokens"].items()
    ]
    return lines
