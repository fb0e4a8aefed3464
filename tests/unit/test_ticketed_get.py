"""A ticketed GET /ai_write checks its query string once: when its ticket is redeemed."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from qa_service.api import asks
from qa_service.api.routes import native
from qa_service.app import create_app
from qa_service.config import Settings
from tests.support.in_process import LOOPBACK

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
KEY = "k" * 32


def test_a_ticketed_get_is_checked_once_and_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, provider="demo", prompts_dir=PROMPTS, api_keys=KEY, demo_chunk_delay_ms=0
    )
    checks = 0

    def counted(*args: object) -> object:
        nonlocal checks
        checks += 1
        return asks.checked_request(*args)  # type: ignore[arg-type]

    with TestClient(create_app(settings), base_url=LOOPBACK) as client:
        issued = client.post(
            "/stream-tickets",
            json={"query": "photosynthesis"},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        ticket = issued.json()["ticket"]
        monkeypatch.setattr(native, "checked_request", counted)
        response = client.get("/ai_write", params={"query": "photosynthesis", "ticket": ticket})

    assert response.status_code == 200
    assert '"done"' in response.text
    assert checks == 0  # the route took the request its ticket was redeemed for
