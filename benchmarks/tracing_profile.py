"""Where tracing's CPU goes: py-spy on the services with tracing off and on, side by side.

benchmarks/tracing.py `--profile` runs the same loads again under py-spy (after
its measured rounds, which py-spy never watches) and summarises here: each
service's profiled CPU-ms per answer (or per 1,000 tokens), and, for the
service with tracing on, its samples in each of tracing's layers (LAYERS),
by where the sample entered tracing's code, as CPU-ms per answer: a sample
counts when its innermost frames are tracing's (a wrapper's own work, not the
app it wraps). What tracing makes others do (LangChain's callback manager
dispatching one more handler per token, asyncio running more) is not in
these layers: compare the services' profiled totals for that. py-spy samples every
thread, so the span processor's export thread is in it; `--nonblocking`
never pauses the service, and idle samples are left out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.service import REPO

from benchmarks.load import Target
from benchmarks.profile import read_collapsed, summarize
from benchmarks.redis_log_profile import SAMPLE_RATE, recording

# A frame of tracing's own code, and a frame of the code that answers (which
# tracing wraps: the ASGI middleware calls the whole app). py-spy names
# OpenTelemetry's frames by their path within its namespace package:
# `(trace/__init__.py:..)`, `(asgi/__init__.py:..)`, not `(opentelemetry/...)`.
TRACING = re.compile(
    r"\((opentelemetry|asgi|trace|context|propagate|propagators|attributes|_shared_internal"
    r"|metrics/_internal|http/trace_exporter|http/metric_exporter|common/_internal"
    r"|google/protobuf|requests|urllib3)/"
    r"|\(_decorator\.py|\(qa_service/(generation/call_spans|observability/tracing)"
)
ANSWERING = re.compile(
    r"\((qa_service|starlette|fastapi|uvicorn|uvloop|langchain_core|langchain_openai|openai"
    r"|httpx|httpcore|h11|anyio|sse_starlette|pydantic|pydantic_core|redis|secure"
    r"|asgi_correlation_id)/"
)
# Tracing's layers, by the frame a sample entered tracing's code at ("function
# (path:line)", as py-spy names frames); the first that matches.
LAYERS = {
    "ASGI middleware (server span; TracedRequests)": (
        r"\(asgi/|^(TracedRequests\.\S+|_referred) \(qa_service/observability/tracing"
    ),
    "GenAI callback handler and traceparent (call_spans.py)": (
        r"\(qa_service/generation/call_spans"
    ),
    "answer span, phase spans, GenAI metrics (tracing.py)": (r"\(qa_service/observability/tracing"),
    "export thread (BatchSpanProcessor, OTLP encoding, HTTP)": (
        r"\((_shared_internal|http/trace_exporter|common/_internal)/"
    ),
    "metric reader thread": r"\((metrics/_internal/export|http/metric_exporter)/",
    "OpenTelemetry called from the app (current span, context)": r".",
}


def entry_of(stack: tuple[str, ...]) -> str | None:
    """The outermost frame of the tracing code a sample is in, or None when its innermost
    frames are the app's: a wrapper's own work counts, what it wraps does not."""
    entry = None
    for frame in reversed(stack):
        if TRACING.search(frame):
            entry = frame
        elif ANSWERING.search(frame):
            break
    return entry


def layer_ms(stacks: Counter[tuple[str, ...]], per: float) -> dict[str, float]:
    """CPU-ms in each of tracing's layers (and in all), divided by `per`."""
    patterns = {name: re.compile(pattern) for name, pattern in LAYERS.items()}
    found: Counter[str] = Counter()
    for stack, count in stacks.items():
        entry = entry_of(stack)
        if entry is None:
            continue
        found["all of tracing"] += count
        found[next(name for name, p in patterns.items() if p.search(entry))] += count
    return {
        name: round(found[name] / SAMPLE_RATE * 1000 / per, 4)
        for name in ("all of tracing", *LAYERS)
    }


async def profile_loads(
    targets: dict[str, Target],
    loads: dict[str, Callable[[Target], Awaitable[float]]],
    raw_prefix: Path,
) -> dict[str, Any]:
    """py-spy on every target while each load runs on each in turn; a load returns what
    its figure is per (answers, or thousands of tokens)."""
    result: dict[str, Any] = {"sample_rate": SAMPLE_RATE}
    for load, run in loads.items():
        rows: dict[str, Any] = {}
        for name, target in targets.items():
            prefix = raw_prefix.with_name(f"{raw_prefix.name}-{load}")
            with recording({name: target}, prefix) as files:
                per = await run(target)
            stacks = read_collapsed(files[name])
            summary = summarize(stacks)
            rows[name] = {
                "raw_stacks": str(files[name].relative_to(REPO)),
                "profiled_ms": round(summary["samples"] / SAMPLE_RATE * 1000 / per, 4),
                "layers_ms": layer_ms(stacks, per),
                "self_by_package": dict(list(summary["self_by_package"].items())[:10]),
                "top_self": dict(list(summary["top_self"].items())[:15]),
            }
        result[load] = rows
    return result


def profile_text(profile: dict[str, Any]) -> list[str]:
    lines = [f"\nprofile (py-spy, {profile['sample_rate']} samples/s, its own rounds)"]
    for load in ("short", "long"):
        rows = profile.get(load)
        if rows is None:
            continue
        unit = "ms an answer" if load == "short" else "ms per 1,000 tokens"
        lines.append(
            f"  {load}: profiled {unit}: "
            + ", ".join(f"{n} {r['profiled_ms']:.3f}" for n, r in rows.items())
        )
        if "on" in rows:
            lines += [
                f"    {ms:8.3f}  {layer}" for layer, ms in rows["on"]["layers_ms"].items() if ms
            ]
    return lines
