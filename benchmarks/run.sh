#!/usr/bin/env bash
# Set up and run every benchmark: ./benchmarks/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
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
uv run --frozen python -m benchmarks.load
# Memory per open stream (issue 25): RSS per held stream at 400, 3 rounds of
# fresh processes, beside the chain relay; then what holds it, by owner
# (tracemalloc in each process, started after the warm-up).
uv run --frozen python -m benchmarks.stream_memory
# The answer cache (issue 22): time to first text of a hit against a miss at one
# stream, CPU per 1,000 tokens of hits against misses at 100 streams (and the
# cache off), upstream calls for a burst of identical questions; then on Redis.
uv run --frozen python -m benchmarks.answer_cache
uv run --frozen python -m benchmarks.answer_cache --redis
# Tracing (issue 24): the service's CPU per short answer and per 1,000 tokens
# with tracing on (a real OTLP collector), off, and with the collector down.
uv run --frozen python -m benchmarks.tracing
# QA_WORKERS=2 against 1: throughput at saturation, Redis store.
uv run --frozen python -m benchmarks.workers
# Where the service's CPU goes under load (py-spy sampling profile).
uv run --frozen python -m benchmarks.profile
