"""The uvicorn internals that server.py relies on are still there."""

from __future__ import annotations

import gc
import inspect
import signal
from typing import Any

import pytest
import uvicorn
from sse_starlette.sse import AppStatus
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from qa_service.core.draining import Drain
from qa_service.server import DrainingServer, guarded_http_protocol


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


async def test_sigterm_begins_a_drain_that_keeps_serving_until_nothing_holds_it() -> None:
    drain = Drain()
    held = [1]  # one answer generating here
    drain.hold_while(lambda: held[0])
    server = DrainingServer(uvicorn.Config(_app, timeout_graceful_shutdown=8), drain)
    try:
        server.handle_exit(signal.SIGTERM, None)
        assert drain.draining
        assert AppStatus.should_exit  # streams start their grace
        assert await server.on_tick(1) is False  # uvicorn serves on: the port stays open
        held[0] = 0
        assert await server.on_tick(2) is True  # nothing left: uvicorn's own shutdown
        # What is left of the whole stop goes to uvicorn's wait.
        assert server.config.timeout_graceful_shutdown == 8
    finally:
        AppStatus.should_exit = False  # process-wide: leave it as other tests expect


async def test_a_second_signal_ends_the_drain_at_once() -> None:
    drain = Drain()
    drain.hold_while(lambda: 1)
    server = DrainingServer(uvicorn.Config(_app, timeout_graceful_shutdown=8), drain)
    try:
        server.handle_exit(signal.SIGTERM, None)
        server.handle_exit(signal.SIGTERM, None)
        assert await server.on_tick(1) is True
    finally:
        AppStatus.should_exit = False


def test_the_server_internals_the_drain_uses_still_exist() -> None:
    assert "self.should_exit" in inspect.getsource(uvicorn.Server.on_tick)
    assert "self.server_state.tasks" in inspect.getsource(uvicorn.Server._wait_tasks_to_complete)
    assert "timeout_graceful_shutdown" in inspect.getsource(uvicorn.Server.shutdown)


@pytest.mark.parametrize(
    "method",
    [
        "connection_made",
        "connection_lost",
        "on_message_begin",
        "on_headers_complete",
        "send_400_response",
    ],
)
def test_the_protocol_hooks_server_py_overrides_still_exist_in_uvicorn(method: str) -> None:
    # A rename upstream would leave our override silently uncalled.
    assert callable(getattr(HttpToolsProtocol, method))


def test_the_cycle_still_tracks_whether_its_response_started_and_completed() -> None:
    source = inspect.getsource(RequestResponseCycle.__init__)
    assert "self.response_started = False" in source
    assert "self.response_complete = False" in source


def test_the_protocol_still_keeps_the_url_and_its_status_lines() -> None:
    # send_400_response tells a too-long URL by the bytes uvicorn collected.
    assert 'self.url = b""' in inspect.getsource(HttpToolsProtocol.on_message_begin)
    assert "self.url += url" in inspect.getsource(HttpToolsProtocol.on_url)
    assert STATUS_LINE[414].startswith(b"HTTP/1.1 414 ")


def test_the_protocol_class_carries_its_header_timeout() -> None:
    protocol = guarded_http_protocol(2.5)
    assert issubclass(protocol, HttpToolsProtocol)
    assert protocol.header_timeout == 2.5


async def test_the_serving_process_freezes_start_up_objects_and_collects_rarely_but_fully() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_config=None)
    config.load()
    server = DrainingServer(config)
    server.lifespan = config.lifespan_class(config)
    thresholds = gc.get_threshold()
    try:
        await server.startup()
        young, middle, full = gc.get_threshold()
        assert young == 10_000
        # Cancelled answers leave cycles only a full collection frees: one
        # every 2,000 young collections let the soak's RSS grow linearly.
        assert middle * full <= 50
        assert gc.get_freeze_count() > 0
    finally:
        await server.shutdown()
        gc.set_threshold(*thresholds)
        gc.unfreeze()
