"""LangSmith tracing through LangChain's own variables, against a loopback sink."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from tests.support.service import run_service
from tests.support.sse import read_stream

FAKE_LANGSMITH_KEY = "lsv2_pt_test_0123456789abcdef0123456789abcdef"


class _Sink(http.server.BaseHTTPRequestHandler):
    """Accepts LangSmith's run uploads and keeps them; answers /info with 404 like an old server."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.received.append((self.path, self.headers.get("x-api-key", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    _Sink.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Sink.received
    server.shutdown()
    server.server_close()


def test_answers_are_traced_to_langsmith_and_the_key_stays_out_of_logs(
    sink: tuple[str, list[tuple[str, str, bytes]]], tmp_path: Path
) -> None:
    endpoint, received = sink
    settings = {
        "QA_PROVIDER": "demo",
        "QA_DEMO_CHUNK_DELAY_MS": "0",
        "LANGSMITH_TRACING": "true",
        "LANGSMITH_API_KEY": FAKE_LANGSMITH_KEY,
        "LANGSMITH_ENDPOINT": endpoint,
    }
    with run_service(settings, tmp_path) as service:
        stream = read_stream(service.url, params={"query": "tides"})
        deadline = time.monotonic() + 15
        while not any(b"ai_write" in body for _, _, body in received):
            assert time.monotonic() < deadline, "no ai_write run reached LangSmith"
            time.sleep(0.1)
        logs = service.logs()

    assert stream.kinds[-1] == "done"
    path, key, body = next(entry for entry in received if b"ai_write" in entry[2])
    assert path.startswith("/runs")
    assert key == FAKE_LANGSMITH_KEY
    assert b"tides" in body  # the question goes to LangSmith: docs/operations.md says so
    assert FAKE_LANGSMITH_KEY not in logs
    assert "Traceback" not in logs
