"""A loopback chat-completions server that speaks OpenAI's and Groq's real SSE wire format.

Raw asyncio streams rather than a framework, because the tests need control a
framework hides: exactly how bytes are cut into TCP writes (to split a UTF-8
character), cutting a connection mid-body, and seeing the moment a client
hangs up. Replies are scripted per request: a test registers a `Reply` under
a marker string, and any request whose messages contain the marker gets it;
one registered for a path too (OPENAI_PATH, GROQ_PATH) wins on that path, so
one stub can play a failing primary and the fallback that answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

OPENAI_PATH = "/v1/chat/completions"
GROQ_PATH = "/openai/v1/chat/completions"
MODELS_PATHS = ("/v1/models", "/openai/v1/models")


@dataclass
class Reply:
    """What the stub answers to one request."""

    pieces: list[str] = field(default_factory=lambda: ["Hello", ", ", "world", "."])
    status: int = 200
    # A JSON error body; "{api_key}" in any string (headers too) is replaced by
    # the bearer token, and "{api_key_masked}" by a masked form of it, the way
    # providers (and proxies) echo the credential they rejected.
    error_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    first_delay: float = 0.0
    piece_delay: float = 0.0
    # After the last piece, wait this long before the finish_reason chunk.
    finish_delay: float = 0.0
    # Write every HTTP body chunk in slices of this many bytes, each its own
    # TCP write, so multi-byte characters arrive split.
    write_slice_bytes: int | None = None
    # Write the whole reply in one TCP write (no delays): a burst of chunks
    # that arrives together, as a busy service reads a provider's stream.
    burst: bool = False
    cut_after_pieces: int | None = None
    # After this many pieces, send nothing more and hold the connection open
    # until the client leaves; with `stall_comment_every`, send an SSE comment
    # that often meanwhile (as OpenAI does while a model thinks).
    stall_after_pieces: int | None = None
    stall_comment_every: float | None = None
    finish_reason: str | None = "stop"
    send_done: bool = True
    usage: dict[str, int] | None = field(
        default_factory=lambda: {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25}
    )


@dataclass
class Exchange:
    """What the stub saw of one request, and how its response ended."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    opened_at: float
    pieces_written: int = 0
    completed: bool = False
    client_closed_at: float | None = None


class UpstreamStub:
    """Run with `start()` in a thread of its own; `url` is its base URL."""

    def __init__(self) -> None:
        # Keyed (marker, path), path None for every path.
        self._replies: dict[tuple[str, str | None], Reply] = {}
        self.default_reply = Reply()
        # Benchmarks turn this off: a long run would otherwise keep every request.
        self.record = True
        self.exchanges: list[Exchange] = []
        # GET /models: how many came, and the status to answer them with.
        self.models_requests = 0
        self.models_status = 200
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, marker: str, reply: Reply, path: str | None = None) -> None:
        with self._lock:
            self._replies[marker, path] = reply

    def exchanges_for(self, marker: str, path: str | None = None) -> list[Exchange]:
        with self._lock:
            return [
                e
                for e in self.exchanges
                if marker in json.dumps(e.body["messages"]) and path in (None, e.path)
            ]

    def exchanges_with_key(self, api_key: str, path: str | None = None) -> list[Exchange]:
        """The requests that carried `api_key` as their bearer token (to `path`)."""
        with self._lock:
            return [
                e
                for e in self.exchanges
                if e.headers.get("authorization") == f"Bearer {api_key}" and path in (None, e.path)
            ]

    def wait_for_request(self, marker: str, timeout: float = 5.0) -> Exchange:
        """The first request with `marker`, once it has arrived."""
        return self._wait(marker, lambda e: True, "no upstream request arrived", timeout)

    def wait_closed(self, marker: str, timeout: float = 5.0, path: str | None = None) -> Exchange:
        """The first request with `marker` (to `path`), once its client has hung up."""
        return self._wait(
            marker,
            lambda e: e.client_closed_at is not None,
            "upstream never closed",
            timeout,
            path,
        )

    def wait_ended(self, marker: str, timeout: float = 5.0) -> Exchange:
        """The first request with `marker`, once its response was written whole or cut."""
        return self._wait(
            marker,
            lambda e: e.completed or e.client_closed_at is not None,
            "upstream never ended",
            timeout,
        )

    def _wait(
        self,
        marker: str,
        done: Callable[[Exchange], bool],
        failure: str,
        timeout: float,
        path: str | None = None,
    ) -> Exchange:
        deadline = time.monotonic() + timeout
        while True:
            exchanges = self.exchanges_for(marker, path)
            if exchanges and done(exchanges[0]):
                return exchanges[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"{failure}: {marker}")
            time.sleep(0.005)

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve_connection, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="upstream-stub", daemon=True)
        self._thread.start()
        assert ready.wait(5), "the stub did not start listening within 5 s"

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        loop, server = self._loop, self._server

        async def shutdown() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(5)

    def _reply_for(self, body: dict[str, Any], path: str) -> Reply:
        if not self._replies:
            return self.default_reply
        text = json.dumps(body.get("messages", []))
        with self._lock:
            matching = {key: reply for key, reply in self._replies.items() if key[0] in text}
        for (_, for_path), reply in matching.items():
            if for_path == path:
                return reply
        for (_, for_path), reply in matching.items():
            if for_path is None:
                return reply
        return self.default_reply

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        raw_body = await reader.readexactly(int(headers.get("content-length", "0")))
        body = json.loads(raw_body) if raw_body else {}
        if method == "GET" and path in MODELS_PATHS:
            await self._list_models(writer)
            return True
        if method != "POST" or path not in (OPENAI_PATH, GROQ_PATH):
            await _write_json(writer, 404, {"error": {"message": "not found"}}, {})
            return True
        exchange = Exchange(path, headers, body, time.monotonic())
        if self.record:
            with self._lock:
                self.exchanges.append(exchange)
        reply = self._reply_for(body, path)
        if reply.status != 200:
            api_key = headers.get("authorization", "").removeprefix("Bearer ")
            error = _fill_key(reply.error_body or {"error": {"message": "failed"}}, api_key)
            await _write_json(writer, reply.status, error, _fill_key(reply.headers, api_key))
            return True
        return await self._stream(reader, writer, exchange, reply, groq=path == GROQ_PATH)

    async def _list_models(self, writer: asyncio.StreamWriter) -> None:
        """`GET /models` in OpenAI's shape (Groq's is the same list)."""
        with self._lock:
            self.models_requests += 1
            status = self.models_status
        if status != 200:
            await _write_json(writer, status, {"error": {"message": "unavailable"}}, {})
            return
        models = [
            {"id": name, "object": "model", "created": 1, "owned_by": "stub"}
            for name in ("gpt-4o-mini", "llama-3.1-8b-instant")
        ]
        await _write_json(writer, 200, {"object": "list", "data": models}, {})

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exchange: Exchange,
        reply: Reply,
        *,
        groq: bool,
    ) -> bool:
        hangup = asyncio.ensure_future(reader.read(1))

        def note_hangup(read: asyncio.Future[bytes]) -> None:
            exchange.client_closed_at = time.monotonic()
            if not read.cancelled():
                read.exception()  # a reset is a hang-up too; mark it retrieved

        hangup.add_done_callback(note_hangup)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n"
            # One stream per connection: then the socket's end means exactly this
            # stream's end, and a read on it can watch for the client hanging up.
            b"connection: close\r\n\r\n"
        )
        try:
            await self._write_events(writer, exchange, reply, hangup, groq=groq)
            # hangup.done(), not client_closed_at: its callback may not have run yet.
            if hangup.done():
                return False
            if reply.cut_after_pieces is not None:
                # Abort: no terminating chunk, so the client sees a truncated body.
                transport = writer.transport
                transport.abort()
                return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            exchange.completed = True
        except ConnectionError:
            exchange.client_closed_at = exchange.client_closed_at or time.monotonic()
        finally:
            if not hangup.done():
                hangup.remove_done_callback(note_hangup)
                hangup.cancel()
        return False

    async def _write_events(
        self,
        writer: asyncio.StreamWriter,
        exchange: Exchange,
        reply: Reply,
        hangup: asyncio.Future[bytes],
        *,
        groq: bool,
    ) -> None:
        model = exchange.body.get("model", "stub-model")
        include_usage = bool((exchange.body.get("stream_options") or {}).get("include_usage"))
        if reply.first_delay and await _hung_up_within(hangup, reply.first_delay):
            return
        if reply.burst:
            events = list(_chunks(model, reply, groq=groq, include_usage=include_usage))
            writer.write(b"".join(_http_chunk(event.data) for event in events))
            await writer.drain()
            exchange.pieces_written += sum(e.piece_index is not None for e in events)
            return
        for event in _chunks(model, reply, groq=groq, include_usage=include_usage):
            if event.piece_index is not None:
                if reply.cut_after_pieces is not None and (
                    event.piece_index >= reply.cut_after_pieces
                ):
                    return
                if event.piece_index == reply.stall_after_pieces:
                    await _stall(writer, hangup, reply.stall_comment_every)
                    return
                if (
                    event.piece_index
                    and reply.piece_delay
                    and await _hung_up_within(hangup, reply.piece_delay)
                ):
                    return
            if (
                event.finishes
                and reply.finish_delay
                and await _hung_up_within(hangup, reply.finish_delay)
            ):
                return
            if hangup.done():
                return
            await _write_chunk(writer, event.data, reply.write_slice_bytes)
            if event.piece_index is not None:
                exchange.pieces_written += 1


@dataclass
class _Event:
    data: bytes
    piece_index: int | None
    finishes: bool = False


def _chunks(model: str, reply: Reply, *, groq: bool, include_usage: bool) -> Iterator[_Event]:
    base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 1, "model": model}

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload = {**base, "system_fingerprint": "fp_stub", "choices": choices, **extra}
        return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    first_extra = {"x_groq": {"id": "req_stub"}} if groq else {}
    yield _Event(event([choice({"role": "assistant", "content": ""})], **first_extra), None)
    for index, piece in enumerate(reply.pieces):
        yield _Event(event([choice({"content": piece})]), index)
    if reply.finish_reason is not None:
        final_extra: dict[str, Any] = {}
        if groq and reply.usage is not None:
            final_extra["x_groq"] = {"id": "req_stub", "usage": reply.usage}
        yield _Event(event([choice({}, reply.finish_reason)], **final_extra), None, finishes=True)
    if include_usage and not groq and reply.usage is not None:
        yield _Event(event([], usage=reply.usage), None)
    if reply.send_done:
        yield _Event(b"data: [DONE]\n\n", None)


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _write_chunk(writer: asyncio.StreamWriter, data: bytes, slice_bytes: int | None) -> None:
    """One SSE event as HTTP chunks; sliced, each slice is a separate TCP write."""
    slices = (
        [data]
        if not slice_bytes
        else [data[i : i + slice_bytes] for i in range(0, len(data), slice_bytes)]
    )
    for part in slices:
        writer.write(_http_chunk(part))
        await writer.drain()
        if slice_bytes:
            await asyncio.sleep(0.001)


async def _stall(
    writer: asyncio.StreamWriter, hangup: asyncio.Future[bytes], comment_every: float | None
) -> None:
    if comment_every is None:
        await asyncio.wait({hangup})
        return
    while not await _hung_up_within(hangup, comment_every):
        await _write_chunk(writer, b": keep-alive\n\n", None)


async def _hung_up_within(hangup: asyncio.Future[bytes], seconds: float) -> bool:
    done, _ = await asyncio.wait({hangup}, timeout=seconds)
    return bool(done)


async def _write_json(
    writer: asyncio.StreamWriter, status: int, body: dict[str, Any], headers: dict[str, str]
) -> None:
    data = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"HTTP/1.1 {status} Stub\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n{extra}\r\n".encode()
        + data
    )
    await writer.drain()


def _fill_key(value: Any, api_key: str) -> Any:
    if isinstance(value, str):
        masked = f"{api_key[:8]}****{api_key[-4:]}"
        return value.replace("{api_key}", api_key).replace("{api_key_masked}", masked)
    if isinstance(value, dict):
        return {k: _fill_key(v, api_key) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_key(v, api_key) for v in value]
    return value


def main() -> None:
    """Run the stub alone (for benchmarks): prints its port, serves until killed."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--pieces", type=int, default=200)
    parser.add_argument("--first-delay", type=float, default=0.0)
    parser.add_argument("--piece-delay", type=float, default=0.0)
    args = parser.parse_args()
    stub = UpstreamStub()
    stub.record = False
    stub.default_reply = Reply(
        pieces=[f" tok{n}" for n in range(args.pieces)],
        first_delay=args.first_delay,
        piece_delay=args.piece_delay,
        usage={
            "prompt_tokens": 20,
            "completion_tokens": args.pieces,
            "total_tokens": 20 + args.pieces,
        },
    )
    stub.start()
    print(stub.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
