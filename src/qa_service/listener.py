"""Accepting connections: every one waiting, each time the listening socket is ready.

uvloop (0.23) accepts one connection per turn of its loop. A busy loop turns
every 50 to 150 ms, so past 10 or 20 new connections a second the rest
wait in the kernel's accept queue, where nothing in the process can see
them: issue 25's newcomers waited seconds for their first text while the
loop's own lag stayed under 60 ms, and a refusal or a /healthz waited as
long. Measured with a loop kept busy 20 ms a turn, 100 connections waiting:
uvloop accepted 42 in a second, asyncio's own loop all 100 in its first turn.

Here the listening socket is read as asyncio does (up to the backlog at each
readiness), and each connection goes to the loop as an accepted socket, so
what waits, waits in the loop, where the adaptive limit sees it and a
refusal costs one turn. As asyncio does too, when the process runs out of
descriptors, accepting pauses for a second instead of spinning.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

# accept() failing for want of resources: wait, as asyncio's loop does.
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
PAUSE_SECONDS = 1.0
# At most this many a readiness: far above uvloop's one, and a flood of
# thousands still leaves the loop a turn for what it already runs.
ACCEPTS_PER_TURN = 128


class Listener:
    """Accepts on `sock` (bound and listening) into `protocol_factory`'s protocols until closed."""

    def __init__(
        self, sock: socket.socket, protocol_factory: Callable[[], asyncio.Protocol], backlog: int
    ) -> None:
        self._sock = sock
        self._factory = protocol_factory
        self._backlog = backlog
        self._loop = asyncio.get_running_loop()
        self._opening: set[asyncio.Task[object]] = set()
        self._closed = False
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept_waiting)

    def _accept_waiting(self) -> None:
        for _ in range(min(self._backlog, ACCEPTS_PER_TURN)):
            try:
                connection, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while it waited
            except OSError as exc:
                # Paused on any error: the socket stays readable, and a
                # persistent one would otherwise log at every turn.
                reason = "out of descriptors" if exc.errno in _OUT_OF_RESOURCES else "error"
                log.warning(
                    "could not accept a connection (%s); pausing 1 s",
                    reason,
                    extra={"errno": exc.errno},
                )
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(PAUSE_SECONDS, self._resume)
                return
            self._open(connection)

    def _open(self, connection: socket.socket) -> None:
        connection.setblocking(False)
        # As uvloop's own accept does (asyncio's connect_accepted_socket does not).
        if connection.family in (socket.AF_INET, socket.AF_INET6):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, connection))
        self._opening.add(task)
        task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[object]) -> None:
        self._opening.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("a connection failed as it opened", exc_info=task.exception())

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept_waiting)

    def close(self) -> None:
        """Stop accepting and close the listening socket; open connections stay."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        # Connections still opening would come after uvicorn's shutdown has
        # listed the ones it closes.
        for opening in self._opening:
            opening.cancel()
