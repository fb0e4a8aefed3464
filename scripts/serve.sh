#!/usr/bin/env bash
# Set up and run the service: ./scripts/serve.sh [--host H] [--port P]
# Without OPENAI_API_KEY or GROQ_API_KEY it answers with the keyless demo provider.
set -euo pipefail
cd "$(dirname "$0")/.."
# --inexact: keep test tools a developer may have installed in the same .venv.
source scripts/bootstrap.sh --no-dev --inexact
# The environment is synced: run its entry point directly, as PID-preserving exec.
exec .venv/bin/qa-service serve "$@"
