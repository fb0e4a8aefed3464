# qa-service container image.
#   docker build -t qa-service .
#   docker run -p 8000:8000 -e OPENAI_API_KEY=sk-... qa-service
# The base image is a build argument so CI can substitute a locally built one.
# Python 3.11: the service's CPU per answer and per token was lowest on it of
# 3.11, 3.12 and 3.13 (benchmarks/interpreters.py; benchmarks/README.md, "The
# interpreter"), and the container tests' stand-in (Debian bookworm) runs it too.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.9
# UV_SYSTEM_CERTS: trust the platform's CA store, as pip does, so builds behind
# TLS-inspecting proxies work.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_SYSTEM_CERTS=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /app
# Dependencies first, from the lockfile alone: this layer is reused until the lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev --no-editable

FROM ${BASE_IMAGE} AS runtime
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    QA_HOST=0.0.0.0 \
    QA_PORT=8000 \
    QA_PROMPTS_DIR=/app/prompts
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin qa
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY prompts ./prompts
USER qa
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('QA_PORT', '8000'), timeout=2)"]
# Exec form: the server is PID 1 and receives SIGTERM itself, so answers drain.
CMD ["qa-service", "serve"]
