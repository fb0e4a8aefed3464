"""benchmarks/stream_memory.py's probe inside a measured process (service or relay).

Loaded at start-up as `sitecustomize` when this directory is first on PYTHONPATH
(with QA_MEMORY_PROBE_DIR set); nothing else in the process changes until a
SIGUSR1 comes. Each SIGUSR1 runs the command in `<dir>/<pid>.cmd` and writes
its answer to `<dir>/<pid>.out` (atomically, by rename):

- `start`: a full collection, the live objects counted by type, then
  tracemalloc started (16 frames; QA_MEMORY_PROBE_FRAMES): from here on every allocation is traced.
- `snapshot`: a full collection, the live objects counted by type again, and
  the traced memory still held, by owner (see `owner`), by allocating package
  and by traceback; then tracemalloc stopped.

Only a benchmark loads this: the service's own code has no debug hook.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import os
import signal
import sys
import sysconfig
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

FRAMES = int(os.environ.get("QA_MEMORY_PROBE_FRAMES", "16"))
STDLIB = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
# Packages that allocate on behalf of whoever called them: the owner is the caller.
PLUMBING = {"anyio", "sniffio", "pydantic", "pydantic_core", "typing_extensions", "wrapt"}
_state: dict[str, Any] = {}


@functools.cache
def package(filename: str) -> str:
    """The top-level package a frame's file belongs to ("<stdlib>" for the standard library)."""
    if filename.startswith(STDLIB) and "site-packages" not in filename:
        return "<stdlib>"
    if "site-packages/" in filename:
        rest = filename.split("site-packages/", 1)[1]
    elif "/src/" in filename:
        rest = filename.rsplit("/src/", 1)[1]
    else:
        return Path(filename).stem
    top = rest.split("/", 1)[0]
    return top.removesuffix(".py")


def owner(frames: list[tracemalloc.Frame]) -> str:
    """Who asked for the memory: the newest frame outside the standard library and
    PLUMBING (for our code, its module: qa_service.answers.run)."""
    if any(frame.filename == __file__ for frame in frames):
        return "<this probe>"
    for frame in reversed(frames):  # newest first
        name = package(frame.filename)
        if name == "<stdlib>" or name in PLUMBING:
            continue
        if name == "qa_service":
            rest = frame.filename.rsplit("/qa_service/", 1)[1]
            return "qa_service." + rest.removesuffix(".py").replace("/", ".")
        return name
    return package(frames[-1].filename) + " (only)" if frames else "<no Python frame>"


def type_counts() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def malloc_info() -> dict[str, int]:
    """glibc's mallinfo2: what the C allocator holds, in use and free (fragmentation)."""

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            # struct mallinfo2's fields, every one, in order.
            for name in (
                *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
                *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
            )
        ]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {name: int(getattr(info, name)) for name, _ in MallInfo2._fields_}


def start() -> dict[str, Any]:
    gc.collect()
    _state["types"] = type_counts()
    _state["malloc"] = malloc_info()
    tracemalloc.start(FRAMES)
    return {"started": True}


def snapshot() -> dict[str, Any]:
    gc.collect()
    types = type_counts()
    snap = tracemalloc.take_snapshot()
    traced, peak = tracemalloc.get_traced_memory()
    by_owner: Counter[str] = Counter()
    by_allocator: Counter[str] = Counter()
    by_trace: Counter[tuple[Any, ...]] = Counter()
    count_by_owner: Counter[str] = Counter()
    # Grouped by whole traceback first: far fewer entries than traces.
    for stat in snap.statistics("traceback"):
        frames = list(stat.traceback)  # oldest first
        who = owner(frames)
        by_owner[who] += stat.size
        count_by_owner[who] += stat.count
        by_allocator[package(frames[-1].filename) if frames else "<none>"] += stat.size
        # The newest 5 frames name the allocation well enough to find it.
        by_trace[(who, *((f.filename, f.lineno) for f in reversed(frames[-5:])))] += stat.size
    tracemalloc.stop()
    before: Counter[str] = _state.get("types", Counter())
    type_growth = {k: v - before.get(k, 0) for k, v in types.items() if v != before.get(k, 0)}
    return {
        "traced_bytes": traced,
        "traced_peak_bytes": peak,
        "by_owner": dict(by_owner.most_common()),
        "blocks_by_owner": dict(count_by_owner.most_common()),
        "by_allocator": dict(by_allocator.most_common()),
        "top_tracebacks": {
            f"[{who}] "
            + " < ".join(f"{os.path.basename(name)}:{line}" for name, line in where): size
            for (who, *where), size in by_trace.most_common(40)
        },
        "type_growth": dict(sorted(type_growth.items(), key=lambda kv: -kv[1])),
        "malloc_before": _state.get("malloc", {}),
        "malloc_after": malloc_info(),
    }


COMMANDS = {"start": start, "snapshot": snapshot}


def on_signal(_signum: int, _frame: object) -> None:
    folder = Path(os.environ["QA_MEMORY_PROBE_DIR"])
    pid = os.getpid()
    command = (folder / f"{pid}.cmd").read_text().strip()
    began = time.perf_counter()
    try:
        answer = COMMANDS[command]()
    except Exception as exc:  # noqa: BLE001 - reported to the benchmark, which fails the run
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    answer["probe_seconds"] = time.perf_counter() - began
    partial = folder / f"{pid}.out.part"
    partial.write_text(json.dumps(answer))
    partial.rename(folder / f"{pid}.out")


if os.environ.get("QA_MEMORY_PROBE_DIR") and "pytest" not in sys.modules:
    signal.signal(signal.SIGUSR1, on_signal)
