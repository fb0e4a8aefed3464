#!/usr/bin/env bash
# Shared by serve.sh and test.sh: make sure uv exists, then install the locked
# dependencies into .venv. Needs only Python >= 3.11 and access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --frozen "$@"
