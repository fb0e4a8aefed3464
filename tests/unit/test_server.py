"""The uvicorn internals that server.py relies on are still there."""

from __future__ import annotations

import signal

import uvicorn

from qa_service.server import DrainingServer


def _app() -> None:  # never called: the server is not started
    raise AssertionError


def test_a_clean_drain_forgets_the_captured_signal_so_the_exit_code_is_zero() -> None:
    server = DrainingServer(uvicorn.Config(_app))
    with server.capture_signals():
        server.handle_exit(signal.SIGTERM, None)
        assert server._captured_signals == [signal.SIGTERM]
    # uvicorn would re-raise every captured signal on leaving the block, which
    # would kill this test process; reaching the next line is the assertion.
    assert server._captured_signals == []
