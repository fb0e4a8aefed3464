"""The serving process: uvicorn, adapted, and the OS limits it needs.

This is the one module that relies on uvicorn's internals. Each adaptation
names the internal it touches; tests/unit/test_server.py checks that those
internals still exist, so an upgrade of uvicorn fails loudly there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import resource
import signal
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, cast

import uvicorn
from sse_starlette.sse import AppStatus
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from qa_service.access.descriptors import streams_within
from qa_service.config import Settings
from qa_service.core import errors
from qa_service.core.draining import Drain
from qa_service.listener import Listener

log = logging.getLogger(__name__)
# Where uvicorn writes its start and its failures to bind.
_uvicorn_log = logging.getLogger("uvicorn.error")

# At least this much of the stop is left to uvicorn's own shutdown, once the
# drain ends: closing the listener and the connections, then the app's end.
UVICORN_SHUTDOWN_SECONDS = 1

# httptools.parse_url keeps URL offsets and lengths as uint16_t.
MAX_URL_BYTES = 65_535


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft limit on open files as far as the hard limit allows.

    The common default soft limit of 1,024 holds about 400 concurrent answers;
    past it, accept() and connect() fail with EMFILE, which clients saw as
    resets and as upstream_unavailable, with no log line saying why.
    Returns (before, after).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # "unlimited" is not a value the kernel takes for this limit; nr_open is.
    target = hard if hard != resource.RLIM_INFINITY else _kernel_open_file_ceiling()
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _kernel_open_file_ceiling() -> int:
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as nr_open:
            return int(nr_open.read())
    except (OSError, ValueError):
        return 1_048_576


def log_open_file_limit(before: int, after: int, settings: Settings) -> None:
    """The limit, and about how many answers at once it holds (as admission counts them)."""
    streams = (
        streams_within(
            after,
            redis=settings.redis_url is not None,
            idle_connections=settings.upstream_max_idle_connections,
        )
        or 0
    )
    level = logging.WARNING if streams < 1000 else logging.INFO
    log.log(
        level,
        "open file limit",
        extra={"open_files": after, "raised_from": before, "concurrent_streams_about": streams},
    )


# The collector's second and third thresholds: a middle-aged collection every
# 10 young ones, a full one every 5 middle-aged ones (50 young ones: about
# every 2 minutes of the soak's mixed traffic, 0.45 young ones a second).
FULL_COLLECTION_CADENCE = (10, 5)


def tune_garbage_collector() -> None:
    """For a serving process, once its app has started: the process owns its collector,
    so an app built in a test's process leaves that process's collector alone."""
    # Start-up's objects (LangChain, the SDKs, pydantic schemas: about
    # 190,000) live as long as the process; frozen, a full collection
    # never walks them again (measured at 185-440 ms on a busy machine).
    gc.freeze()
    # What open answers hold (their logs, LangChain's chunks) still
    # grows the heap under load, and with the default thresholds
    # (700, 10, 10) a full collection came every 0.7 s, each a pause
    # of 60-250 ms with nothing to free: the requests that arrived
    # during a burst waited seconds for their turn (time to first
    # text p99 5.6 s against p50 0.9 s at 200 streams, benchmarks/load.py
    # (d)). Rarer collections: reference counting frees all but cycles
    # at once anyway, and cycles wait a little longer.
    # But not much longer: every cancelled or hung-up answer leaves cycles
    # (CancelledError tracebacks through sse-starlette, httpcore, LangChain,
    # holding its request, transport and chunks), and only a full collection
    # frees them. At (10_000, 20, 100) one came every 2,000 young ones, over
    # an hour of the soak's traffic: RSS grew about 4 MB a minute, linearly
    # (benchmarks/README.md, "The soak's RSS growth: cycles the collector
    # reached too rarely").
    gc.set_threshold(10_000, *FULL_COLLECTION_CADENCE)


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain on SIGTERM that keeps the port open, and a clean drain exits 0.

    uvicorn stops listening the moment a signal comes. A load balancer takes
    seconds to drop a stopping instance from its endpoints, and meanwhile its
    connections were refused, `/readyz` included, which could never say 503.
    With a `drain`, the first SIGTERM or SIGINT begins it instead: the port
    stays open, the app answers `/readyz` 503 `shutting_down` and refuses new
    answers (core/draining.py), and sse-starlette is told at once, so each
    stream's grace starts (wire/sse.py). When no request is in flight and no
    answer generates here any more, or when the grace is over, uvicorn's own
    shutdown follows: it stops listening, waits for the connections left
    within what remains of `timeout_graceful_shutdown`, then ends the app
    (its lifespan ends the answers still running here). A second signal ends
    the drain at once. docs/operations.md ("Stopping") has the timeline.

    uvicorn re-raises the captured signal once it has drained, so the process
    dies "killed by SIGTERM" (exit 143 under Docker) even when every answer
    ended cleanly. A clean drain is a success.

    Internals used: `Server.handle_exit/on_tick`, `.should_exit`,
    `.server_state.tasks`, `._captured_signals` (tests/unit/test_server.py).
    """

    def __init__(self, config: uvicorn.Config, drain: Drain | None = None) -> None:
        super().__init__(config)
        self._drain = drain
        # The whole stop is bounded as uvicorn's graceful shutdown alone was:
        # the drain takes its share, and uvicorn's wait gets what is left.
        self._stop_seconds = config.timeout_graceful_shutdown or 0
        self._listeners: list[Listener] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # Our own accepting (listener.py), not uvloop's one connection a turn:
        # uvicorn gets no socket, and runs the app's lifespan only.
        listening = sockets if sockets is not None else [self._bind()]
        await super().startup(sockets=[])  # the app's lifespan has run
        if self.should_exit:
            return
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            # As uvicorn's startup builds each connection's protocol.
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
            )

        self._listeners = [Listener(sock, create_protocol, config.backlog) for sock in listening]
        if sockets is None:
            # Once accepting, after "Application startup complete", as uvicorn says it.
            host, port = listening[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            _uvicorn_log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, port)
        tune_garbage_collector()

    def _bind(self) -> socket.socket:
        # As uvicorn's create_server would have: the same exit code and
        # message when the port is taken.
        host, port = self.config.host, self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family, backlog=self.config.backlog)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            _uvicorn_log.error(
                "[Errno %s] error while attempting to bind on address %r: %s",
                exc.errno,
                (host, port),
                reason,
            )
            sys.exit(STARTUP_FAILURE)
        return sock

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # First, as uvicorn closes its servers: no new connection from here on.
        for listener in self._listeners:
            listener.close()
        await super().shutdown(sockets=sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is None or self._drain.draining or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._drain.begin()
        # sse-starlette's own flag (its documented switch): streams learn of
        # the stop within 0.5 s and start their grace, while uvicorn serves on.
        AppStatus.should_exit = True
        log.info("draining", extra={"signal": signal.Signals(sig).name})

    async def on_tick(self, counter: int) -> bool:
        drain = self._drain
        if drain is not None and drain.draining and not self.should_exit:
            idle = not self.server_state.tasks and not drain.held()
            if idle or drain.seconds() >= self._stop_seconds - UVICORN_SHUTDOWN_SECONDS:
                self._end_drain(drain)
        return await super().on_tick(counter)

    def _end_drain(self, drain: Drain) -> None:
        # Whole seconds, as uvicorn types the setting; at most one more than left.
        left = math.ceil(self._stop_seconds - drain.seconds())
        self.config.timeout_graceful_shutdown = max(UVICORN_SHUTDOWN_SECONDS, left)
        log.info(
            "drained; stopping",
            extra={
                "drain_seconds": round(drain.seconds(), 2),
                "requests_in_flight": len(self.server_state.tasks),
                "held_by_answers": drain.held(),
            },
        )
        self.should_exit = True


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with two guards uvicorn lacks, and JSON refusals.

    - A connection must deliver a request's headers within `header_timeout`
      of opening (or of starting its next request). uvicorn arms no timer
      before the first request, so 1,000 silent connections stayed open for
      as long as their clients liked, each holding a descriptor.
    - A response cut off mid-body is aborted, not closed. uvicorn closes the
      transport when the app fails after the response started (our send
      timeout, for one), and asyncio's close() first flushes the write
      buffer: to a client that never reads, that is never, and the socket
      stayed ESTABLISHED. The tail of a broken response helps nobody.
      Complete responses still close gracefully.

    Requests the parser rejects never reach the app, so uvicorn answered them
    with a plain-text 400 ("Invalid HTTP request received."). One of them is
    any URL over 65,535 bytes, which a browser's EventSource sends for a long
    question (issue 10). They now get the app's JSON shape: 414 `url_too_long`
    pointing to POST, or 400 `bad_http_request`.

    Internals used: `HttpToolsProtocol.connection_made/connection_lost/
    on_message_begin/on_headers_complete/send_400_response`, `.cycle`, `.url`,
    `STATUS_LINE`, and the cycle's `response_started/response_complete`
    (tests/unit/test_server.py).
    """

    header_timeout: float = 10.0
    # Told why, whenever the server ends a connection itself (metrics).
    on_closed: Callable[[str], None] = staticmethod(lambda reason: None)
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvicorn hands this object on to every request's cycle.
        wrapped = _CutOffAborting(cast(asyncio.Transport, transport), self)
        super().connection_made(cast(asyncio.Transport, wrapped))
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_late(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # A request pipelined behind an answer still streaming: uvicorn
            # reads it only once that answer ends, so its clock starts then.
            self._arm_header_timer()
            return
        log.debug("closed a connection that sent no request headers in time")
        self.on_closed("no_request")
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        too_long = len(getattr(self, "url", b"")) > MAX_URL_BYTES
        public = errors.URL_TOO_LONG if too_long else errors.UNPARSEABLE_REQUEST
        body = json.dumps({"error": public.as_dict()}).encode()
        head = [STATUS_LINE[public.status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"x-content-type-options: nosniff\r\n",
                b"connection: close\r\n",
                b"\r\n",
            ]
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def response_cut_off(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.response_started and not cycle.response_complete


_LINGER_OFF = struct.pack("ii", 1, 0)  # struct linger {l_onoff=1, l_linger=0}


class _CutOffAborting:
    """The connection's transport, except that closing a cut-off response aborts it."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        if not self._protocol.response_cut_off():
            self._transport.close()
            return
        if self._transport.is_closing():
            return  # reset already (uvicorn closes again as the connection is lost)
        # abort() alone only frees our descriptor: the kernel would keep the
        # socket, its unsent megabytes, and the client's connection, for as
        # long as it probes a zero window. Linger 0 makes the close a reset.
        self._protocol.on_closed("response_cut_off")
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF)
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def guarded_http_protocol(
    header_timeout: float, on_closed: Callable[[str], None] | None = None
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to hand uvicorn (`Config(http=...)`)."""
    attributes: dict[str, Any] = {"header_timeout": header_timeout}
    if on_closed is not None:
        attributes["on_closed"] = staticmethod(on_closed)
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), attributes)
