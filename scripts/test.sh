#!/usr/bin/env bash
# Set up and run the whole test suite: ./scripts/test.sh
# Lint, types, then unit, integration and container tests: the real service
# under uvicorn, and the Docker image under podman, against a loopback stub of
# the providers' HTTP APIs. Nothing leaves 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== system packages"
./scripts/system-deps.sh
source scripts/bootstrap.sh

echo "== ruff"
uv run --frozen ruff format --check src tests benchmarks
uv run --frozen ruff check src tests benchmarks
echo "== mypy --strict"
uv run --frozen mypy
echo "== pytest"
uv run --frozen pytest tests/unit tests/integration tests/container "$@"
