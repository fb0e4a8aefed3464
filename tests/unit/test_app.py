"""The app before its lifespan has opened the model: not ready, in the usual error shape."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from qa_service.app import create_app
from qa_service.config import Settings

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"


def test_before_start_up_readyz_and_answers_are_503_not_ready() -> None:
    settings = Settings(_env_file=None, provider="demo", prompts_dir=PROMPTS)  # type: ignore[call-arg]
    client = TestClient(create_app(settings))  # not entered: the lifespan has not run

    for response in (client.get("/readyz"), client.get("/ai_write", params={"query": "x"})):
        assert response.status_code == 503
        assert response.json() == {
            "error": {
                "code": "not_ready",
                "message": "The service is starting or stopping.",
                "retryable": True,
            }
        }
    assert client.get("/healthz").json() == {"status": "ok"}
