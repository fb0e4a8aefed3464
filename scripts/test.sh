#!/usr/bin/env bash
# Set up and run the whole test suite: ./scripts/test.sh
# (The quick loop, with no set-up and no processes: ./scripts/check.sh.)
# Lint, types, then unit tests, the Helm chart's (rendered in process), and
# integration and container tests (the real service under uvicorn, and the
# Docker image under podman, against a loopback stub of the providers' HTTP
# APIs; the AI SDK's own client among them), the JS client's
# tests under node, and the browser tests in headless Chromium. Nothing leaves
# 127.0.0.1 but the one `npm ci` of the JS tests' lockfile.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== system packages"
./scripts/system-deps.sh
# Arguments are for pytest; a sourced script would otherwise see them as its own.
PYTEST_ARGS=("$@")
set --
source scripts/bootstrap.sh

echo "== npm ci: the JS tests' dependencies (tests/js/package-lock.json)"
# The AI SDK's client, each major side by side, for tests/js/ai-sdk/ (driven by
# tests/integration/test_ai_sdk_client.py). Installed again only when the
# lockfile changed; npm's cache (~/.npm) makes a reinstall an offline copy.
lock_sum=$(sha256sum tests/js/package-lock.json | cut -d" " -f1)
if [ "$(cat tests/js/node_modules/.lock-sha256 2>/dev/null)" != "$lock_sum" ]; then
    npm ci --prefix tests/js --prefer-offline --no-audit --no-fund --loglevel=error
    echo "$lock_sum" >tests/js/node_modules/.lock-sha256
fi

echo "== ruff"
uv run --frozen ruff format --check src tests benchmarks
uv run --frozen ruff check src tests benchmarks
echo "== mypy --strict"
uv run --frozen mypy
echo "== import-linter: the layers import one way"
uv run --frozen lint-imports
# Coverage counts the service's own processes too (pyproject: patch = subprocess).
rm -rf .coverage-data && mkdir -p .coverage-data
# In QA_TEST_WORKERS pytest-xdist workers (3 unless set): most integration tests
# wait on their subprocesses (the service, the stub, redis-server, nginx), not
# on the CPU. A module's tests stay on one worker, and the `slow` tests run one
# at a time (--dist loadgroup; the groups: tests/conftest.py). Coverage follows
# every worker (patch = subprocess), as it follows the services they start.
echo "== pytest: unit, deploy (the Helm chart), integration, in ${QA_TEST_WORKERS:=3} workers"
uv run --frozen coverage run -m pytest tests/unit tests/deploy tests/integration \
    -n "$QA_TEST_WORKERS" --dist loadgroup --durations=25 "${PYTEST_ARGS[@]}"
# Their own invocation, one test at a time: they build and remove one image by name.
echo "== pytest: container"
uv run --frozen coverage run -m pytest tests/container --durations=25 "${PYTEST_ARGS[@]}"
echo "== node --test: the JS client"
node --test tests/js/
# Their own invocation: sync Playwright and pytest-asyncio do not share a loop.
echo "== pytest: browser"
uv run --frozen coverage run -m pytest tests/browser --durations=25 "${PYTEST_ARGS[@]}"
echo "== coverage: the tests and every service process they started"
uv run --frozen coverage combine --quiet
uv run --frozen coverage report
