"""The app in this process (create_app and its lifespan, no uvicorn), for refusal and
header checks where a real server adds nothing.

Nothing that streams, hangs up, cancels or times anything belongs here: the
test client gets a response only once it is whole (as httpx.ASGITransport
does), and no socket lies between the two. tests/support/service.py runs the
real service for those.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pytest
from starlette.testclient import TestClient

from qa_service.app import create_app
from qa_service.config import load_settings
from tests.support.service import service_env

# Where an in-process app is taken to listen: a loopback Host, which the
# DNS-rebinding guard accepts (TestClient's default, "testserver", is a name).
LOOPBACK = "http://127.0.0.1:8000"


@contextmanager
def app_client(settings: Mapping[str, str]) -> Iterator[TestClient]:
    """A client of a fresh app, its lifespan running, configured as run_service's
    subprocess would be with these settings (the same environment, no .env)."""
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as empty:
        env = service_env({**settings, "QA_PORT": "8000"})
        for name, value in env.items():
            patch.setenv(name, value)
        for name in ("QA_", "OPENAI_", "GROQ_", "LANGSMITH_", "LANGCHAIN_"):
            for present in [n for n in os.environ if n.startswith(name) and n not in env]:
                patch.delenv(present)
        patch.chdir(empty)  # no stray .env
        loaded = load_settings()
    # The base URL is where the service would listen: the page's same-origin
    # checks compare against it.
    with TestClient(create_app(loaded), base_url=LOOPBACK) as client:
        yield client
