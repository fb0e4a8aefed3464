"""A loopback chat-completions server over TLS (HTTP/2 or HTTP/1.1 by ALPN) and plain HTTP,
that keeps connections alive as a provider's edge does, and counts them.

Why a second stub: upstream_stub.py closes every connection after its
stream (it watches the socket's end to see a client hang up), so a client's
connection pool never gets to reuse anything there. A real provider keeps
connections alive and speaks TLS, mostly HTTP/2. This one is hypercorn (an
ASGI server that speaks h2 and HTTP/1.1 over TLS, and HTTP/1.1 in the clear)
serving the same SSE bytes as upstream_stub.py (its `Reply` and `_chunks`),
and it counts the connections it accepted, on each port, and the HTTP versions
its requests came in: what a pool test or a burst benchmark counts.

Its certificate comes from a CA made here with trustme, written to a
directory; a client trusts it through `ca_file` (the service through the
standard SSL_CERT_FILE, which httpx reads).

    python -m tests.support.tls_upstream DIR '{"marker": {"pieces": [...], ...}}'

prints "<https port> <http port>" and serves until killed; a line "count" on
its stdin is answered with the JSON of `connection_counts()`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypercorn.asyncio.run
import trustme
from hypercorn.asyncio import serve
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.config import Config

from tests.support.ports import free_port
from tests.support.upstream_stub import MODELS_PATHS, OPENAI_PATH, Reply, _chunks

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# Longer than any client keep-alive under test, so the client decides when an
# idle connection ends (hypercorn's default is 5 s).
SERVER_KEEP_ALIVE_SECONDS = 600

# Connections accepted, by the local port that accepted them. Counted where
# hypercorn makes one TCPServer per accepted connection: a client's (host,
# port) would undercount, as the kernel hands a closed connection's port out
# again.
_accepted: dict[int, int] = {}
_accepted_lock = threading.Lock()


class _CountingTCPServer(TCPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        port = self.writer.get_extra_info("sockname")[1]
        with _accepted_lock:
            _accepted[port] = _accepted.get(port, 0) + 1


hypercorn.asyncio.run.TCPServer = _CountingTCPServer  # type: ignore[misc]


@dataclass
class TlsFiles:
    """A CA and a certificate for 127.0.0.1 signed by it, as PEM files in `directory`."""

    directory: Path
    ca_file: Path = field(init=False)
    cert_file: Path = field(init=False)
    key_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = self.directory / "ca.pem"
        self.cert_file = self.directory / "server.pem"
        self.key_file = self.directory / "server.key"
        ca.cert_pem.write_to_path(str(self.ca_file))
        server.private_key_pem.write_to_path(str(self.key_file))
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))


class TlsUpstream:
    """The ASGI app, its replies by marker, and the connections it served."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.default_reply = Reply()
        self._lock = threading.Lock()
        self.http_versions: set[str] = set()
        self.requests = 0
        self.open_streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        with self._lock:
            self.http_versions.add(f"{scope['scheme']}/{scope['http_version']}")
            self.requests += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if scope["method"] == "GET" and path in MODELS_PATHS:
            await _json(send, 200, {"object": "list", "data": [{"id": "gpt-4o-mini"}]})
            return
        if scope["method"] != "POST" or path != OPENAI_PATH:
            await _json(send, 404, {"error": {"message": "not found"}})
            return
        request = json.loads(body)
        await self._stream(request, receive, send)

    async def _stream(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        text = json.dumps(request.get("messages", []))
        reply = next((r for m, r in self.replies.items() if m in text), self.default_reply)
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        hangup = asyncio.ensure_future(_disconnected(receive))
        with self._lock:
            self.open_streams += 1
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
                }
            )
            if reply.first_delay and await _hung_up_within(hangup, reply.first_delay):
                return
            model = request.get("model", "stub-model")
            for event in _chunks(model, reply, groq=False, include_usage=include_usage):
                if event.piece_index is not None:
                    if event.piece_index == reply.stall_after_pieces:
                        await hangup  # hold the stream until the client leaves
                        return
                    if (
                        event.piece_index
                        and reply.piece_delay
                        and await _hung_up_within(hangup, reply.piece_delay)
                    ):
                        return
                await send({"type": "http.response.body", "body": event.data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            hangup.cancel()
            with self._lock:
                self.open_streams -= 1


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _hung_up_within(hangup: asyncio.Future[None], seconds: float) -> bool:
    done, _ = await asyncio.wait({hangup}, timeout=seconds)
    return bool(done)


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def server_config(files: TlsFiles, https_port: int, http_port: int) -> Config:
    config = Config()
    config.bind = [f"127.0.0.1:{https_port}"]
    config.insecure_bind = [f"127.0.0.1:{http_port}"]
    config.certfile = str(files.cert_file)
    config.keyfile = str(files.key_file)
    config.keep_alive_timeout = SERVER_KEEP_ALIVE_SECONDS
    config.accesslog = None
    config.errorlog = None
    config.loglevel = "WARNING"
    return config


class RunningTlsUpstream:
    """The stub in a thread of its own (for tests): `https_url`, `http_url`, `app`."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.app = TlsUpstream()
        self.https_port, self.http_port = free_port(), free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def connection_counts(self) -> dict[str, Any]:
        """Connections accepted so far by scheme; HTTP versions seen; requests; streams open."""
        with _accepted_lock:
            https, http = _accepted.get(self.https_port, 0), _accepted.get(self.http_port, 0)
        with self.app._lock:
            return {
                "connections": {"https": https, "http": http},
                "http_versions": sorted(self.app.http_versions),
                "requests": self.app.requests,
                "open_streams": self.app.open_streams,
            }

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        config = server_config(self.files, self.https_port, self.http_port)
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop, self._stop = loop, asyncio.Event()
            stop = self._stop

            async def main() -> None:
                ready.set()
                await serve(self.app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, name="tls-upstream", daemon=True)
        self._thread.start()
        assert ready.wait(5), "the TLS stub did not start within 5 s"
        _wait_listening(self.https_port, self.http_port)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


def _wait_listening(*ports: int, timeout: float = 10.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with socket.socket() as sock:
                sock.settimeout(1)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, f"the TLS stub is not listening on {port}"
            time.sleep(0.05)


def main() -> None:
    """Run alone (benchmarks): prints its two ports; answers "count" lines on stdin."""
    directory, spec = Path(sys.argv[1]), json.loads(sys.argv[2])
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency of the service
        pass
    stub = RunningTlsUpstream(TlsFiles(directory))
    for marker, script in spec.items():
        pieces = list(script["pieces"])
        stub.app.replies[marker] = Reply(
            pieces=pieces,
            first_delay=float(script.get("first_delay", 0.0)),
            piece_delay=float(script.get("piece_delay", 0.0)),
            usage={
                "prompt_tokens": 20,
                "completion_tokens": len(pieces),
                "total_tokens": 20 + len(pieces),
            },
        )
    stub.start()
    print(stub.https_port, stub.http_port, flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(json.dumps(stub.connection_counts()), flush=True)
    stub.stop()


if __name__ == "__main__":
    main()
