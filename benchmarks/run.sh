#!/usr/bin/env bash
# Set up and run every benchmark: ./benchmarks/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
# Issue 25's figures are against main before it (94bbced, or QA_BENCH_BASELINE):
# its src/ and prompts/, exported once where benchmarks/measure.py's
# BASELINE_SRC looks for them.
baseline=benchmarks/results/work/baseline
if [ ! -d "$baseline/src" ]; then
    mkdir -p "$baseline"
    git archive "${QA_BENCH_BASELINE:-94bbced}" src prompts | tar -x -C "$baseline"
fi
uv run --frozen python -m benchmarks.relay
# The chain's CPU per chunk, stock StrOutputParser against the inline one.
uv run --frozen python -m benchmarks.parser
# Resumable answers: resume latency, Redis commands and bytes per answer, and
# the service's CPU per 1,000 tokens, Redis store against in-process.
uv run --frozen python -m benchmarks.resume
# The Redis log's costs (issue 21): Redis commands per provider piece and bytes
# per token, the service's CPU per 1,000 tokens on Redis against in-process,
# Redis connections held by 200 readers of one answer on another replica, and
# memory per open stream. `--src LABEL=DIR` (repeatable) compares source trees.
uv run --frozen python -m benchmarks.redis_log
# Admission and per-client limits: the service's CPU per request with every
# limit on against none (memory and Redis counters, same run), Redis commands
# per request, and a refused request's CPU against an admitted one's.
uv run --frozen python -m benchmarks.admission_cost
# What users feel (issue 12's table, one run): time to first text at 1 stream,
# CPU per 1,000 tokens at 100 concurrent streams, time to first text and stream
# duration at 200 (a burst, and steadily arriving), RSS per held stream at
# 400, every stream checked for exactness; each against the stub and a naive
# sse-starlette relay of the same chain in the same run.
uv run --frozen python -m benchmarks.load --baseline-src "$baseline/src"
# Memory per open stream (issue 25): RSS per held stream at 400, 3 rounds of
# fresh processes, beside the chain relay; then what holds it, by owner
# (tracemalloc in each process, started after the warm-up).
uv run --frozen python -m benchmarks.stream_memory --baseline-src "$baseline/src"
# The answer cache (issue 22): time to first text of a hit against a miss at one
# stream, CPU per 1,000 tokens of hits against misses at 100 streams (and the
# cache off), upstream calls for a burst of identical questions; then on Redis.
uv run --frozen python -m benchmarks.answer_cache
uv run --frozen python -m benchmarks.answer_cache --redis
# Tracing (issue 24): the service's CPU per short answer and per 1,000 tokens
# with tracing on (a real OTLP collector), off, and with the collector down.
uv run --frozen python -m benchmarks.tracing
# The provider connection (issue 25, steps 2 and 3), against main before it:
# a burst of 200 short answers and 100 streams over HTTPS and plain HTTP, with
# the connections each opened; HTTP/2 and the aiohttp transport beside httpx.
uv run --frozen python -m benchmarks.transport
# Starting an answer (issue 25): the service's CPU per 2-token answer, 20 at a
# time and in a burst of 200 (with its time to first text), against main before
# the round (its exported src/) and the chain relay, in the same run.
uv run --frozen python -m benchmarks.startup --profile
# QA_WORKERS=2 against 1: throughput at saturation, Redis store, and the
# scaling on paper from per-core figures (the load side shares a core here).
uv run --frozen python -m benchmarks.workers
# The interpreter (issue 25): the service, its stub and the chain relay on 3.11,
# 3.12 and 3.13 (where found), interleaved: CPU per 2-token answer and per
# 1,000 tokens, a burst's time to first text, RSS per stream.
uv run --frozen python -m benchmarks.interpreters
# Where the service's CPU goes under load (py-spy sampling profile).
uv run --frozen python -m benchmarks.profile
# Overload (issue 25 step 6): twice what one core serves, offered steadily to
# main's tree before the round, this tree and the chain relay; admitted,
# refused, time to first text and refusal latency, goodput, /healthz under a flood.
uv run --frozen python -m benchmarks.overload --baseline-src "$baseline/src"
# The soak (issue 25): 30 minutes of mixed traffic (answers, hang-ups, cancels,
# resumes on the other replica, refusals, slow readers) on two replicas over
# Redis; every 30 s each replica's RSS, fds, asyncio tasks and connections, and
# Redis' keys and memory. Exits 1 if a series grows, or Redis keeps a key of
# ours past QA_RESUME_TTL_SECONDS. tests/integration/test_soak.py runs 2 minutes.
uv run --frozen python -m benchmarks.soak
