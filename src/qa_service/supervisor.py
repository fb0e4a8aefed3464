"""QA_WORKERS > 1: several worker processes on one port, one graceful shutdown.

Each worker is `qa-service serve` itself (`--listen-fd`), so every worker is
the single-process service unchanged: its own event loop, app, model clients
and drain on SIGTERM. Each listens on a socket of its own, all of them in one
SO_REUSEPORT group, and the kernel spreads new connections over them by a hash
of each connection's addresses. One socket shared by all would leave the
spread to whichever worker wakes first, and a loop that wakes accepts every
connection waiting: a burst of new streams can land on one worker.

The port is this group's alone (issue 20). SO_REUSEPORT lets any process of
the same user join a group, so a second deployment on the same port (other
keys, limits, provider) used to join ours silently and take a share of the
connections. The kernel offers no way to close a group to newcomers, and a
socket bound without SO_REUSEPORT, which would refuse them, refuses our own
workers too. So the supervisor claims the port before any worker starts
(claim_port): it takes a lock named by the address, then checks with an
ordinary bind that nothing listens there yet, then opens every worker's
socket itself, and hands each to its worker (an inherited descriptor). A
second group fails on the lock or on the check ("address already in use"),
as a single-worker `serve` fails on its own bind. With the sockets opened
at once after the check, no later starter can slip in while workers import
for seconds; connections that arrive meanwhile wait in the backlog.

Why not uvicorn's own `workers=`: it runs uvicorn's plain Server in each
process and pickles the config, so neither our draining server nor our
guarded protocol (built around the app's telemetry) would reach the workers.

Workers share answers (resume, cancel) and limits only through Redis, so
more than one worker needs QA_REDIS_URL (config.py refuses otherwise).

Signals: the workers run in their own session, so a terminal's Ctrl-C or a
process-group signal reaches only this process, which sends each worker one
SIGTERM (uvicorn would force-exit on a second signal). A worker that exits on
its own (it crashed, or could not start) stops the rest the same way, and this
process exits with its code: the orchestrator restarts the whole service.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger(__name__)

# How often the supervisor looks at its workers; a worker's exit is noticed this late.
POLL_SECONDS = 0.2
# prctl(2): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
# Each worker's own backlog, as uvicorn's default for one process.
BACKLOG = 2048


class PortClaimError(Exception):
    """The port cannot be this group's: in use (by another deployment, say), or refused."""


def supervise(workers: int, host: str, port: int) -> int:
    """Serve with `workers` processes until SIGTERM or SIGINT; the exit code to use.

    Raises PortClaimError, before any worker starts, when the port is not free.
    """
    with claim_port(host, port, workers) as listeners:
        return _supervise([_start_worker(host, port, sock) for sock in listeners])


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    stopping = False
    workers = len(children)
    log.info("workers started", extra={"workers": workers, "pids": [c.pid for c in children]})

    def stop(signum: int, frame: FrameType | None = None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while any(child.poll() is None for child in children):
        ended = next((c for c in children if c.returncode is not None), None)
        if ended is not None and not stopping:
            # Before any stop, every exit is a failure, even a clean one.
            code = _exit_code(ended.returncode) or 1
            log.error(
                "a worker exited; stopping the others",
                extra={"pid": ended.pid, "exit_code": ended.returncode},
            )
            stop(signal.SIGTERM)
        time.sleep(POLL_SECONDS)
    # A worker still starting up when the stop came dies of the SIGTERM itself
    # (uvicorn's handlers are not installed yet); it held no answers.
    stopped = {0, -signal.SIGTERM}
    failed = [_exit_code(c.returncode) for c in children if c.returncode not in stopped]
    return code or (failed[0] if failed else 0)


def _exit_code(returncode: int | None) -> int:
    """A child's return code as a shell reports it: killed by signal N is 128 + N."""
    if returncode is None:
        return 0
    return 128 - returncode if returncode < 0 else returncode


@contextlib.contextmanager
def claim_port(host: str, port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` listening sockets on the port, one SO_REUSEPORT group that no other
    `serve` joins while this lasts (the module's docstring says how)."""
    where = f"{host}:{port}"
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(_address_lock(where))
            _check_nothing_listens(host, port)
            listeners = [held.enter_context(_listener(host, port)) for _ in range(count)]
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise PortClaimError(f"cannot listen on {where}: {reason}") from None
        yield listeners


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _address_lock(where: str) -> socket.socket:
    """Held while the group runs: a second supervisor for the same address fails
    to bind it, even one that checked the port in the same instant as this one.

    An abstract Unix socket: it lives in the network namespace, as the port
    does, and goes with the process, however that ends (a SIGKILL included),
    so no stale lock outlives a crash. Linux only; elsewhere, the check alone.
    """
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if sys.platform == "linux":
        try:
            lock.bind(f"\0qa-service:{where}")
        except OSError:
            lock.close()
            raise
    return lock


def _check_nothing_listens(host: str, port: int) -> None:
    """An ordinary bind (SO_REUSEADDR, as uvicorn's own, so that connections left
    in TIME_WAIT by an earlier run do not count) fails while any socket listens
    on the port: one of another group, of a single-worker `serve`, of anything.
    It never listens itself, so it never takes a connection."""
    family = _family(host)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # as socket.create_server binds the listeners
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((host, port))


def _listener(host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the shared port."""
    return socket.create_server(
        (host, port), family=_family(host), backlog=BACKLOG, reuse_port=True
    )


def _start_worker(host: str, port: int, listener: socket.socket) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "qa_service", "serve", "--host", host, "--port", str(port)]
    supervisor = os.getpid()
    fd = listener.fileno()
    worker = subprocess.Popen(
        [*command, "--listen-fd", str(fd)],
        pass_fds=(fd,),
        start_new_session=True,
        # preexec_fn is unsafe with threads; the supervisor runs none.
        preexec_fn=lambda: _stop_with(supervisor),
    )
    # The worker has its copy now. Ours must go: a listening socket that stays
    # open here after its worker has closed it (to drain, or as it died)
    # would keep taking connections that nobody accepts.
    listener.close()
    return worker


def _stop_with(supervisor: int) -> None:
    """In a new worker: SIGTERM when the supervisor dies, so that a supervisor
    killed outright (SIGKILL) leaves no worker serving behind it. Linux only."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)
