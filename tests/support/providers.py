"""Service settings that point each provider at the stub, with fake keys."""

from __future__ import annotations

import uuid

from tests.support.upstream_stub import UpstreamStub

# Fake, generated per run: shaped like real keys so redaction is tested for real.
OPENAI_KEY = f"sk-test-{uuid.uuid4().hex}"
GROQ_KEY = f"gsk_test{uuid.uuid4().hex}"

# A short keep-alive puts comment lines among the events of every test.
# QA_RESUME_GRACE_SECONDS=0: a hang-up cancels the answer at once, as before resume existed.
CANCEL_ON_HANGUP = {"QA_RESUME_GRACE_SECONDS": "0"}
# QA_FIRST_TEXT_HOLD_SECONDS=0: every stream starts at once, so a failure before
# the first text is an error event, as these tests expect; test_hold_window.py
# runs the default, where it is a real HTTP status.
FAST = {
    "QA_UPSTREAM_MAX_RETRIES": "0",
    "QA_LOG_LEVEL": "info",
    "QA_KEEPALIVE_SECONDS": "0.2",
    "QA_FIRST_TEXT_HOLD_SECONDS": "0",
}


def provider_settings(provider: str, stub: UpstreamStub) -> dict[str, str]:
    if provider == "openai":
        return {
            **FAST,
            "QA_PROVIDER": "openai",
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": f"{stub.url}/v1",
        }
    return {
        **FAST,
        "QA_PROVIDER": "groq",
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": stub.url,
    }


def marker() -> str:
    """A unique string for a query, so the stub picks this test's scripted reply."""
    return f"m{uuid.uuid4().hex[:12]}"
