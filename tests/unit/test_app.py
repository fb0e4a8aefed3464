"""The app before its lifespan has opened the model: not ready, in the usual error shape."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from qa_service.app import create_app
from qa_service.config import Settings
from tests.support.in_process import LOOPBACK

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"


def test_before_start_up_readyz_and_answers_are_503_not_ready() -> None:
    settings = Settings(_env_file=None, provider="demo", prompts_dir=PROMPTS)  # type: ignore[call-arg]
    client = TestClient(
        create_app(settings), base_url=LOOPBACK
    )  # not entered: the lifespan has not run

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


def test_a_bug_is_a_json_500_that_tells_the_client_nothing_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(_env_file=None, provider="demo", prompts_dir=PROMPTS)  # type: ignore[call-arg]
    app = create_app(settings)

    @app.get("/broken/{secret}")
    def broken(secret: str) -> None:
        raise RuntimeError("detail-that-must-not-leave")

    client = TestClient(app, raise_server_exceptions=False, base_url=LOOPBACK)
    with caplog.at_level(logging.ERROR, logger="qa_service"):
        # A path can hold an id that reads an answer: the log names the route.
        response = client.get("/broken/resp-id-that-must-not-leave")

    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "The service failed to answer.",
            "retryable": False,
        }
    }
    (record,) = [r for r in caplog.records if r.name.startswith("qa_service")]
    assert record.getMessage() == "unhandled error exception=RuntimeError route=/broken/{secret}"
    assert "detail-that-must-not-leave" not in caplog.text
    assert "resp-id-that-must-not-leave" not in caplog.text


def test_an_app_started_in_process_leaves_the_processs_garbage_collector_alone() -> None:
    # The serving process tunes its collector (server.py); an app a test
    # starts in its own process must not change that process's.
    settings = Settings(_env_file=None, provider="demo", prompts_dir=PROMPTS)  # type: ignore[call-arg]
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()

    with TestClient(create_app(settings), base_url=LOOPBACK) as client:
        assert client.get("/readyz").status_code == 200

    assert (gc.get_threshold(), gc.get_freeze_count()) == (thresholds, frozen)
