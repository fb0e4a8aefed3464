"""uvicorn, adapted: the one module that relies on uvicorn's internals.

Each adaptation names the internal it touches; tests/unit/test_server.py checks
that those internals still exist, so an upgrade of uvicorn fails loudly there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class DrainingServer(uvicorn.Server):
    """uvicorn, but a graceful shutdown on SIGTERM exits 0.

    uvicorn re-raises the captured signal once it has drained, so the process
    dies "killed by SIGTERM" (exit 143 under Docker) even when every answer
    ended cleanly. A clean drain is a success.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()
