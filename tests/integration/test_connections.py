"""Connections that hold resources without using them are let go.

A client that stops reading mid-answer, and a connection that never sends a
request, each hold a descriptor (and, for the reader, megabytes of buffer).
The service ends both within a bound it documents.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest

from tests.support.metrics import delta, read_metrics
from tests.support.providers import CANCEL_ON_HANGUP, marker, provider_settings
from tests.support.service import RunningService, SharedServices
from tests.support.sockets import tcp_socket
from tests.support.sse import read_stream
from tests.support.upstream_stub import Reply, UpstreamStub

SEND_TIMEOUT = 1.0
HEADER_TIMEOUT = 1.0


@pytest.fixture(params=["openai", "groq"])
def strict(
    request: pytest.FixtureRequest, stub: UpstreamStub, shared_services: SharedServices
) -> RunningService:
    settings = {
        **provider_settings(request.param, stub),
        **CANCEL_ON_HANGUP,
        "QA_SEND_TIMEOUT_SECONDS": str(SEND_TIMEOUT),
        "QA_REQUEST_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "QA_MAX_TOKENS": "100000",  # an answer far bigger than every buffer on the way
    }
    return shared_services.one(settings)


def _port(service: RunningService) -> int:
    return int(service.url.rsplit(":", 1)[1])


def test_a_client_that_stops_reading_is_disconnected_after_the_send_timeout(
    strict: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    # Paced at the source, as a model is: the service must not be able to
    # read the whole answer before the client's side has had time to stall.
    stub.reply(key, Reply(pieces=["x" * 2000] * 30_000, piece_delay=0.001))
    before = read_metrics(strict.url)
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        client.connect(("127.0.0.1", _port(strict)))
        client.sendall(f"GET /ai_write?query={key} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        server_port, client_port = _port(strict), client.getsockname()[1]

        # The server's send queue grows while buffers fill, then stands still:
        # from its last growth on, every send waits, and the send timeout runs.
        deadline = time.monotonic() + 30
        stalled_at = None
        previous = -1
        while (server_side := tcp_socket(server_port, client_port)) is not None:
            now = time.monotonic()
            assert now < deadline, f"still connected: {server_side}"
            if server_side.send_queue != previous:
                stalled_at, previous = now, server_side.send_queue
            time.sleep(0.05)
        gone_at = time.monotonic()

    assert stalled_at is not None
    # Reset, not a graceful close: the kernel keeps nothing of it either.
    assert gone_at - stalled_at < SEND_TIMEOUT + 3.0
    exchange = stub.wait_closed(key, timeout=2.0)
    assert not exchange.completed
    # A client's doing, logged once as a warning, never as a service error.
    records = strict.log_records()
    assert [r["message"] for r in records if r["level"] == "ERROR"] == []
    assert any(r["message"].startswith("client stopped reading") for r in records)
    closed = delta(before, read_metrics(strict.url), "qa_connections_closed_total")
    assert closed == 1
    assert (
        delta(
            before,
            read_metrics(strict.url),
            "qa_connections_closed_total",
            reason="response_cut_off",
        )
        == 1
    )


def test_connections_that_send_no_request_are_closed_after_the_header_timeout(
    strict: RunningService,
) -> None:
    before = read_metrics(strict.url)
    clients = [socket.create_connection(("127.0.0.1", _port(strict))) for _ in range(200)]
    opened_at = time.monotonic()
    try:
        for client in clients:
            client.settimeout(max(0.01, opened_at + HEADER_TIMEOUT + 3.0 - time.monotonic()))
            with contextlib.suppress(ConnectionResetError):  # a reset is a close too
                assert client.recv(1) == b""  # the server closed it
        closed_after = time.monotonic() - opened_at
    finally:
        for client in clients:
            client.close()

    assert HEADER_TIMEOUT - 0.2 < closed_after < HEADER_TIMEOUT + 3.0
    # The service is none the worse for it, and operators can see what happened.
    assert read_stream(strict.url, params={"query": marker()}).last.keys() == {"done"}
    after = read_metrics(strict.url)
    assert delta(before, after, "qa_connections_closed_total", reason="no_request") == 200


def test_headers_sent_too_slowly_are_cut_off_at_the_header_timeout(
    strict: RunningService,
) -> None:
    with socket.create_connection(("127.0.0.1", _port(strict))) as client:
        opened_at = time.monotonic()
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        while time.monotonic() - opened_at < HEADER_TIMEOUT + 3.0 and not closed:
            try:
                client.sendall(b"X-Slow: a\r\n")
                client.settimeout(0.25)
                closed = client.recv(1) == b""
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
        closed_after = time.monotonic() - opened_at

    assert closed
    assert HEADER_TIMEOUT - 0.2 < closed_after < HEADER_TIMEOUT + 3.0


def test_a_request_pipelined_behind_a_streaming_answer_does_not_cut_it(
    strict: RunningService, stub: UpstreamStub
) -> None:
    """The header clock of a pipelined request starts when the answer before it ends."""
    key = marker()
    pieces = [f"p{n} " for n in range(60)]
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.05))  # 3 s, past HEADER_TIMEOUT
    with socket.create_connection(("127.0.0.1", _port(strict))) as client:
        client.sendall(
            f"GET /ai_write?query={key} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
            + b"GET /healthz HTTP/1.1\r\n"  # the next request, its headers unfinished
        )
        client.settimeout(HEADER_TIMEOUT + 3.0)
        received = b""
        while b'"done"' not in received:
            data = client.recv(65536)
            assert data, f"cut off after {len(received)} bytes"
            received += data

    assert "".join(pieces) == "".join(
        json.loads(line[6:])["text"]
        for line in received.decode().splitlines()
        if line.startswith('data: {"text"')
    )
