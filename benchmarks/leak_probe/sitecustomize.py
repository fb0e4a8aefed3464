"""A debug hook for benchmarks/leak_bisect.py only (loaded via PYTHONPATH, never in src).

Every QA_PROBE_SECONDS it appends one JSON line to QA_PROBE_OUT: pymalloc's
arenas (from sys._debugmallocstats, which writes to fd 2: captured in a
temporary file), allocated blocks, gc-tracked objects, the collector's counts
and threads. Options, each an environment variable:
- QA_PROBE_THRESHOLD=a,b,c: the collector's thresholds, set at each sample
  over the service's own (a candidate tuning, tried without changing src);
- QA_PROBE_COLLECT: a full collection first (`collected`, and `collect_ms`);
- QA_PROBE_GARBAGE: what a full collection would free, by type (`garbage`);
- QA_PROBE_CYCLES (with QA_PROBE_GARBAGE): for each exception in that garbage,
  what holds it and the frames of its traceback (`exception_referrers`).
"""

import gc
import json
import os
import re
import sys
import tempfile
import threading
import time

OUT = os.environ.get("QA_PROBE_OUT")


def _mallocstats() -> dict[str, int]:
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    found = {}
    for key, pattern in {
        "arenas_allocated_total": r"# arenas allocated total\s*=\s*([\d,]+)",
        "arenas_reclaimed": r"# arenas reclaimed\s*=\s*([\d,]+)",
        "arenas_highwater": r"# arenas highwater mark\s*=\s*([\d,]+)",
        "arenas_allocated_current": r"# arenas allocated current\s*=\s*([\d,]+)",
    }.items():
        match = re.search(pattern, text)
        if match:
            found[key] = int(match.group(1).replace(",", ""))
    return found


def _exception_referrers() -> dict[str, int]:
    """For each exception in the garbage: what holds it (type, or frame by code), and
    the frames its traceback runs through, so the cycle that keeps it shows."""
    held: dict[str, int] = {}
    garbage_ids = {id(thing) for thing in gc.garbage}
    for thing in gc.garbage:
        if not isinstance(thing, BaseException):
            continue
        for holder in gc.get_referrers(thing):
            if id(holder) not in garbage_ids:
                continue
            name = type(holder).__name__
            if name == "frame":
                name += ":" + holder.f_code.co_qualname
            elif name == "dict":
                owners = [
                    type(o).__name__ for o in gc.get_referrers(holder) if id(o) in garbage_ids
                ]
                name += "<-" + ",".join(sorted(set(owners))[:3])
            key = f"{type(thing).__name__} held by {name}"
            held[key] = held.get(key, 0) + 1
        tb = thing.__traceback__
        path = []
        while tb is not None:
            path.append(tb.tb_frame.f_code.co_qualname)
            tb = tb.tb_next
        key = f"{type(thing).__name__} tb " + " > ".join(path[-6:])
        held[key] = held.get(key, 0) + 1
    return dict(sorted(held.items(), key=lambda item: -item[1])[:30])


def _garbage() -> dict[str, object]:
    """What a full collection would free, by type (and frames and coroutines by name)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        kinds: dict[str, int] = {}
        for thing in gc.garbage:
            name = type(thing).__name__
            if name in ("frame", "coroutine", "function"):
                code = getattr(thing, "f_code", None) or getattr(thing, "cr_code", None)
                code = code or getattr(thing, "__code__", None)
                name += ":" + (code.co_qualname if code else "?")
            kinds[name] = kinds.get(name, 0) + 1
        top = sorted(kinds.items(), key=lambda item: -item[1])[:40]
        found: dict[str, object] = {"garbage_total": len(gc.garbage), "garbage": dict(top)}
        if os.environ.get("QA_PROBE_CYCLES"):
            try:
                found["exception_referrers"] = _exception_referrers()
            except Exception as exc:  # noqa: BLE001 - a debug probe: say why, go on sampling
                found["exception_referrers"] = {repr(exc): 0}
        return found
    finally:
        gc.garbage.clear()
        gc.set_debug(0)


def _sample() -> None:
    period = float(os.environ.get("QA_PROBE_SECONDS", "10"))
    while True:
        time.sleep(period)
        threshold = os.environ.get("QA_PROBE_THRESHOLD")  # over the service's own tuning
        if threshold:
            gc.set_threshold(*(int(part) for part in threshold.split(",")))
        began = time.perf_counter()
        collected = gc.collect() if os.environ.get("QA_PROBE_COLLECT") else None
        collect_ms = round((time.perf_counter() - began) * 1000, 1)
        garbage = _garbage() if os.environ.get("QA_PROBE_GARBAGE") else {}
        reading = {
            "at": time.time(),
            "collected": collected,
            "collect_ms": collect_ms,
            "gc_counts": gc.get_count(),
            "gc_collections": [g["collections"] for g in gc.get_stats()],
            "blocks": sys.getallocatedblocks(),
            "gc_objects": len(gc.get_objects()),
            "threads": threading.active_count(),
            "os_threads": len(os.listdir("/proc/self/task")),
            **_mallocstats(),
            **garbage,
        }
        with open(OUT, "a") as out:
            out.write(json.dumps(reading, default=repr) + "\n")


if OUT:
    threading.Thread(target=_sample, name="leak-probe", daemon=True).start()
