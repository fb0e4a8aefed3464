"""Free ports on 127.0.0.1 for the daemons the tests start, one band per pytest process.

Not bind(0): the kernel picks those from its ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 on Linux), the range
every outgoing connection takes its local port from too. A port found free
that way and closed again, for the daemon to bind a moment later, is fair
game for any other socket in the meantime: another pytest-xdist worker's
probe, or the local end of one of the thousands of connections a flood test
opens. Then a daemon fails to start, or, worse, its readiness check reaches
another test's service on that port and passes; and a redis-server restarted
on "its" port can find it taken.

So ports come from below the ephemeral range, where the kernel never hands
out a port by itself, and each process of a session takes its own band:
the controller (or a plain pytest run) the first, xdist worker gwN the
band after it. Within a band they are handed out in turn from a random
start, so two sessions on one machine seldom probe the same port at once,
and a port is not handed out again before the band has gone round (a test's
"dead upstream" port stays dead). Each is still checked by binding it.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import socket

FIRST_PORT = 10_000
BAND = 1_000
# 22 bands fit below 32768: the controller's and 21 workers'.
LAST_PORT = 32_000


def _band_start() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist
    index = int(worker.removeprefix("gw")) + 1 if worker.startswith("gw") else 0
    start = FIRST_PORT + index * BAND
    assert start + BAND <= LAST_PORT, f"no port band left for xdist worker {worker}"
    return start


_START = _band_start()
_turn = itertools.count(random.randrange(BAND))


def free_port() -> int:
    """A port of this process's band that nothing on 127.0.0.1 is bound to right now."""
    for _ in range(BAND):
        port = _START + next(_turn) % BAND
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
        return port
    raise RuntimeError(f"no free port in {_START}-{_START + BAND - 1}")
