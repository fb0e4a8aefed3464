"""benchmarks/redis_log.py's figures: its rounds summarised, and the table it prints."""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from collections.abc import Callable
from typing import Any

from benchmarks.redis_log_profile import compare_text


def spread(values: list[float]) -> dict[str, float]:
    """Median and range: the rounds' scatter is how far to trust the median."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise_rounds(tree: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """(a) and (b) from one tree's rounds; (c) and (d) as measured."""
    rounds = tree["rounds"]
    on_redis = [r for r in rounds if r["store"] == "redis" and r["tokens"]]
    in_memory = [r for r in rounds if r["store"] == "memory" and r["tokens"]]

    def per_token(key: str) -> dict[str, float]:
        return spread([r[key] / r["tokens"] for r in on_redis])

    def cpu_per_1000(rows: list[dict[str, Any]], key: str = "service_cpu_s") -> list[float]:
        return [r[key] / r["tokens"] * 1000 for r in rows]

    calls: Counter[str] = Counter()
    for r in on_redis:
        calls.update(r["redis_calls"])
    answers = sum(r["tokens"] for r in on_redis) / args.pieces
    redis_cpu, memory_cpu = cpu_per_1000(on_redis), cpu_per_1000(in_memory)
    pooled = sum(r["service_cpu_s"] for r in on_redis) / sum(r["tokens"] for r in on_redis)
    pooled_memory = sum(r["service_cpu_s"] for r in in_memory) / sum(r["tokens"] for r in in_memory)
    return {
        "a_redis_cost": {
            "answers_per_round": args.answers,
            "pieces_per_answer": args.pieces,
            "piece_delay_s": args.piece_delay,
            "commands_per_piece": per_token("redis_total_calls"),
            # Per event stored (an append), which the read-ahead's merging leaves alone.
            "commands_per_event": spread(
                [r["redis_total_calls"] / r["events_stored"] for r in on_redis]
            ),
            "input_bytes_per_token": per_token("redis_input_bytes"),
            "output_bytes_per_token": per_token("redis_output_bytes"),
            "used_memory_bytes_per_token": per_token("redis_used_memory_added_bytes"),
            # Fewer than the pieces when the service read several at once (its
            # read-ahead), which makes fewer appends: load shifts the count per piece.
            "text_events_per_answer": spread([r["text_events_per_answer"] for r in on_redis]),
            "calls_per_answer": {
                name: n / answers for name, n in sorted(calls.items(), key=lambda kv: -kv[1])
            },
            # What the idle replicas send while the in-process store is loaded.
            "background_calls_per_s": spread(
                [r["redis_total_calls"] / r["wall_s"] for r in in_memory]
            ),
        },
        "b_cpu": {
            "redis_cpu_s_per_1000_tokens": spread(redis_cpu),
            "memory_cpu_s_per_1000_tokens": spread(memory_cpu),
            # Paired by round: the two stores of one round ran back to back.
            "ratio_redis_to_memory": spread(
                [r / m for r, m in zip(redis_cpu, memory_cpu, strict=False)]
            ),
            "ratio_pooled": pooled / pooled_memory,
            "redis_server_cpu_s_per_1000_tokens": spread(
                cpu_per_1000(on_redis, "redis_server_cpu_s")
            ),
            "load_core_busy_max": max(r["load_core_busy"] for r in rounds),
            "foreign_busy_max": max(v for r in rounds for v in r["foreign_busy"].values()),
        },
        "c_fanout": tree["c_fanout"],
        "b_profile": tree.get("profile"),
        "d_memory_per_stream": tree["d_memory_per_stream"],
        "rounds": rounds,
    }


# Above this share of a core used by other jobs, the run says its figures are suspect.
FOREIGN_LIMIT = 0.10


def warnings(report: dict[str, Any]) -> list[str]:
    """What makes this run's figures suspect."""
    found = []
    if not report["pinning"]["ok"]:
        found.append(f"not pinned: {report['pinning']['detail']}")
    for label, result in report["results"].items():
        foreign = result["b_cpu"]["foreign_busy_max"]
        if foreign > FOREIGN_LIMIT:
            found.append(
                f"{label}: other processes used up to {foreign:.0%} of a core during a round;"
                " read the ratios (same run, alternating) more than the absolute CPU"
            )
        if not result["c_fanout"]["live_samples"]:
            found.append(
                f"{label}: (c) the answer ended before every reader had attached (or been refused)"
            )
    return found


def _range(row: dict[str, float], fmt: str) -> str:
    return f"{row['median']:{fmt}} [{row['min']:{fmt}}-{row['max']:{fmt}}]"


def report_text(report: dict[str, Any]) -> str:
    results: dict[str, dict[str, Any]] = report["results"]
    labels = list(results)
    args, machine, pinning = report["args"], report["machine"], report["pinning"]
    width = max(26, *(len(label) + 2 for label in labels))

    def row(name: str, cell: Callable[[dict[str, Any]], str]) -> str:
        return f"  {name:38}" + "".join(f"{cell(results[label]):>{width}}" for label in labels)

    a = "a_redis_cost"
    lines = [
        f"\nRedis log benchmark  {report['started_at']}  commit {report['git']['commit'][:10]}"
        f"{' (dirty)' if report['git']['dirty'] else ''}, load average"
        f" {machine['loadavg_start'][0]:.2f} at start, {machine['loadavg_end'][0]:.2f} at end",
        f"  pinning: {'ok' if pinning['ok'] else 'NOT PINNED'} ({pinning['detail']})",
        *(f"  {label}: {src}" for label, src in report["trees"].items()),
        f"\n(a, b) {args['answers']} concurrent answers x {args['pieces']} pieces at"
        f" {args['piece_delay'] * 1000:g} ms, clients on the producer; {args['rounds']} rounds"
        " per store, alternating; median [min-max] over rounds",
        f"  {'':38}" + "".join(f"{label:>{width}}" for label in labels),
        row("(a) Redis commands per piece", lambda r: _range(r[a]["commands_per_piece"], ".3f")),
        row(
            "    Redis commands per event stored",
            lambda r: _range(r[a]["commands_per_event"], ".3f"),
        ),
        row(
            "    text events per answer (merged pieces)",
            lambda r: _range(r[a]["text_events_per_answer"], ".0f"),
        ),
        row("    Redis bytes in per token", lambda r: _range(r[a]["input_bytes_per_token"], ".0f")),
        row(
            "    Redis bytes out per token", lambda r: _range(r[a]["output_bytes_per_token"], ".0f")
        ),
        row(
            "    Redis dataset memory added per token",
            lambda r: _range(r[a]["used_memory_bytes_per_token"], ".0f"),
        ),
        row(
            "    idle replicas' commands per s",
            lambda r: _range(r[a]["background_calls_per_s"], ".1f"),
        ),
        row(
            "(b) CPU-s / 1k tokens, Redis (A)",
            lambda r: _range(r["b_cpu"]["redis_cpu_s_per_1000_tokens"], ".3f"),
        ),
        row(
            "    CPU-s / 1k tokens, in-process (M)",
            lambda r: _range(r["b_cpu"]["memory_cpu_s_per_1000_tokens"], ".3f"),
        ),
        row(
            "    ratio Redis / in-process, by round",
            lambda r: _range(r["b_cpu"]["ratio_redis_to_memory"], ".2f"),
        ),
        row("    ratio, all rounds pooled", lambda r: f"{r['b_cpu']['ratio_pooled']:.2f}"),
        row(
            "    redis-server CPU-s / 1k tokens",
            lambda r: _range(r["b_cpu"]["redis_server_cpu_s_per_1000_tokens"], ".3f"),
        ),
        row(
            "    core 1 busy / foreign, max",
            lambda r: (
                f"{r['b_cpu']['load_core_busy_max']:.0%} / {r['b_cpu']['foreign_busy_max']:.0%}"
            ),
        ),
        f"\n(c) {args['readers']} readers of one answer ({args['fanout_pieces']} pieces at"
        f" {args['fanout_piece_delay'] * 1000:g} ms) on B, produced on A",
        row(
            "    B's Redis connections, live: max/med",
            lambda r: (
                f"{r['c_fanout']['follower_connections_live_max']}"
                f" / {r['c_fanout']['follower_connections_live_median']}"
            ),
        ),
        row(
            "    of them in use (idle<=1s): med/max",
            lambda r: (
                f"{r['c_fanout']['follower_busy_connections_live_median']}"
                f" / {r['c_fanout']['follower_busy_connections_live_max']}"
            ),
        ),
        row(
            "    B's by their name (CLIENT LIST), max",
            lambda r: f"{r['c_fanout'].get('follower_named_connections_live_max')}",
        ),
        row(
            "    A's Redis connections, live max",
            lambda r: f"{r['c_fanout']['producer_connections_live_max']}",
        ),
        row(
            "    B's Redis connections, idle",
            lambda r: f"{r['c_fanout']['idle']['follower']}",
        ),
        row(
            "    all clients (INFO), live max / idle",
            lambda r: (
                f"{r['c_fanout']['all_clients_live_max']} / {r['c_fanout']['idle']['all_clients']}"
            ),
        ),
        row(
            "    readers whole and exact",
            lambda r: f"{r['c_fanout']['readers_whole_and_exact']}/{r['c_fanout']['readers']}",
        ),
        row(
            "    all attached (or refused) after, s",
            lambda r: (
                f"{r['c_fanout']['readers_settled_after_s'] or 0:.2f}"
                f" ({r['c_fanout']['live_samples']} live samples)"
            ),
        ),
        row(
            "    XREAD calls while they read",
            lambda r: f"{r['c_fanout']['redis_calls'].get('xread', 0)}",
        ),
        f"\n(d) {args['hold_streams']} streams held open ({args['hold_seconds']:g} s each):"
        " VmRSS growth per open stream",
        row(
            "    MB per stream, Redis (A)",
            lambda r: f"{r['d_memory_per_stream']['redis']['growth_mb_per_stream']:.3f}",
        ),
        row(
            "    MB per stream, in-process (M)",
            lambda r: f"{r['d_memory_per_stream']['memory']['growth_mb_per_stream']:.3f}",
        ),
    ]
    for label, result in results.items():
        calls = result[a]["calls_per_answer"]
        lines.append(
            f"\n  {label}, Redis commands per answer: "
            + ", ".join(f"{name} {n:.1f}" for name, n in list(calls.items())[:8])
        )
    for label, result in results.items():
        if result.get("b_profile"):
            lines += compare_text(label, result["b_profile"])
    exact = report["exactness"]
    lines.append(
        f"\nexactness: {exact['streams_checked']} streams checked,"
        f" {exact['mismatches']} mismatches "
        + " ".join(f"{k}={v['mismatches']}/{v['streams']}" for k, v in exact["by_scenario"].items())
    )
    lines += [f"  MISMATCH {m}" for m in exact["first_mismatches"]]
    lines += [f"WARNING: {w}" for w in report["warnings"]]
    lines.append(f"wall time {report['wall_s']:.0f} s; written to {report['written_to']}")
    return "\n".join(lines)
