"""SIGTERM mid-answer: answers get a bounded grace, and none ends in a silent close."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.service import RunningService, run_service

GRACE = 2


def _read_events(service: RunningService, scenario: str, events: list[dict[str, Any]]) -> None:
    params = {"query": "x", "scenario": scenario}
    with httpx.stream("GET", f"{service.url}/ai_write", params=params, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))


def _sigterm_during(
    scenario: str, tmp_path: Path, chunk_delay_ms: int
) -> tuple[list[Any], int, float]:
    settings = {
        "QA_SHUTDOWN_GRACE_SECONDS": str(GRACE),
        "QA_DEMO_PAUSE_SECONDS": "30",
        "QA_DEMO_CHUNK_DELAY_MS": str(chunk_delay_ms),
    }
    events: list[dict[str, Any]] = []
    with run_service(settings, tmp_path) as service:
        reader = threading.Thread(target=_read_events, args=(service, scenario, events))
        reader.start()
        deadline = time.monotonic() + 10
        while not any("text" in event for event in events):
            assert reader.is_alive(), f"the reader died: {events}"
            assert time.monotonic() < deadline, f"no text: {events}"
            time.sleep(0.01)
        signalled = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        code = service.process.wait(timeout=15)
        exited_after = time.monotonic() - signalled
        reader.join(5)
    return events, code, exited_after


def test_an_answer_that_outlasts_the_grace_ends_with_shutting_down(tmp_path: Path) -> None:
    events, code, exited_after = _sigterm_during("long_silence", tmp_path, chunk_delay_ms=1)

    assert events[-1] == {
        "error": {
            "code": "shutting_down",
            "message": "The service is restarting; ask again to reach another instance.",
            "retryable": True,
        }
    }
    assert code == 0
    # Not before the grace; and well before the 30 s the answer would have
    # taken, with room for a busy 2-core machine (and coverage) to exit.
    assert GRACE <= exited_after < GRACE + 8


def test_an_answer_that_fits_in_the_grace_completes(tmp_path: Path) -> None:
    events, code, _ = _sigterm_during("normal", tmp_path, chunk_delay_ms=4)

    assert "done" in events[-1]
    assert code == 0
