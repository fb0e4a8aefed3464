"""A loopback HTTP proxy that lets nothing through and remembers who tried.

Pointed at by HTTP_PROXY / HTTPS_PROXY / ALL_PROXY, it is where every client
that honours those variables (httpx, requests, urllib) sends a request for
anywhere outside NO_PROXY: a `CONNECT host:443` for HTTPS, an absolute-form
`POST http://host/...` for plain HTTP. It records that first line and answers
403, so nothing leaves the machine and the test knows what would have.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.ports import free_port


class RecordingProxy:
    """`attempts()`: the request line of every connection made to it, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: list[str] = []
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def proxy_settings(self) -> dict[str, str]:
        """The variables that send a process's outbound HTTP here; loopback stays direct."""
        return {
            name: self.url
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
        } | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def attempts(self) -> list[str]:
        with self._lock:
            return list(self._attempts)

    def start(self) -> None:
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.connection.settimeout(5)
                try:
                    line = self.rfile.readline(8192).decode("latin-1").strip()
                except OSError:  # a timeout too
                    line = ""
                with proxy._lock:
                    proxy._attempts.append(line or "(connected, sent nothing)")
                with contextlib.suppress(OSError):
                    self.wfile.write(
                        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", free_port()), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="recording-proxy", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


@contextmanager
def run_recording_proxy() -> Iterator[RecordingProxy]:
    proxy = RecordingProxy()
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
