#!/usr/bin/env bash
# Set up and run every benchmark: ./benchmarks/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
uv run --frozen python -m benchmarks.relay
