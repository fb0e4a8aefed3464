#!/usr/bin/env bash
# Shared by serve.sh and test.sh: make sure uv exists, then install the locked
# dependencies into .venv. Needs only Python >= 3.11 and access to PyPI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v uv >/dev/null 2>&1; then
    if ! python3 -m uv --version >/dev/null 2>&1; then
        python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    fi
    # `python3 -m uv` works wherever pip put it, on PATH or not.
    uv() { python3 -m uv "$@"; }
fi
uv sync --frozen "$@"
