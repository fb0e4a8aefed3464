"""QA_WORKERS > 1: several worker processes on one port, one graceful shutdown.

Each worker is `qa-service serve` itself (`--worker`), so every worker is the
single-process service unchanged: its own event loop, app, model clients and
drain on SIGTERM. Each binds the port with SO_REUSEPORT, and the kernel
spreads new connections over them by a hash of each connection's addresses.
One socket shared by all would leave the spread to whichever worker wakes
first, and a loop that wakes accepts every connection waiting: a burst of
new streams can land on one worker.

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

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger(__name__)

# How often the supervisor looks at its workers; a worker's exit is noticed this late.
POLL_SECONDS = 0.2
# prctl(2): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def supervise(workers: int, host: str, port: int) -> int:
    """Serve with `workers` processes until SIGTERM or SIGINT; the exit code to use."""
    stopping = False
    children = [_start_worker(host, port) for _ in range(workers)]
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


def worker_socket(host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the shared port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048, reuse_port=True)


def _start_worker(host: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "qa_service", "serve", "--host", host, "--port", str(port)]
    supervisor = os.getpid()
    return subprocess.Popen(
        [*command, "--worker"],
        start_new_session=True,
        # preexec_fn is unsafe with threads; the supervisor runs none.
        preexec_fn=lambda: _stop_with(supervisor),
    )


def _stop_with(supervisor: int) -> None:
    """In a new worker: SIGTERM when the supervisor dies, so that a supervisor
    killed outright (SIGKILL) leaves no worker serving behind it. Linux only."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the line above
        os.kill(os.getpid(), signal.SIGTERM)
