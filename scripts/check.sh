#!/usr/bin/env bash
# The quick loop while working: ./scripts/check.sh (arguments go to pytest).
# Format, lint, types, import contracts, the unit tests and the JS client's unit
# tests. No apt, no npm, no service process: it needs only what ./scripts/test.sh
# (or `uv sync`) set up once. scripts/test.sh stays the whole suite, and CI's.
# Measured on the 2-core development machine (2026-12-06, load under 1): 19 s,
# or 35 s with no mypy cache yet (.mypy_cache/ makes its later runs incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
    uv() { python3 -m uv "$@"; }
fi

echo "== ruff"
uv run --frozen ruff format --check src tests benchmarks
uv run --frozen ruff check src tests benchmarks
echo "== mypy --strict (incremental)"
uv run --frozen mypy --incremental --cache-dir .mypy_cache
echo "== import-linter: the layers import one way"
uv run --frozen lint-imports
# Two pytest-xdist workers: 14 s against 35 s in one process (measured beside a
# full run of scripts/test.sh). `-n 0` as an argument runs them in this process
# (for --pdb, say).
echo "== pytest: unit, and the Helm chart rendered in process (tests/deploy, about 2 s)"
uv run --frozen pytest tests/unit tests/deploy -q -n 2 \
    -m "not slow and not replicas and not container and not browser" "$@"
echo "== node --test: the JS client (no npm packages needed)"
node --test --test-reporter=dot tests/js/*.test.mjs
