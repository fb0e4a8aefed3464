"""The process's drain after SIGTERM: whether it has begun, and what still holds it open.

The server (server.py) begins it and ends it; the app reads it: `/readyz`
answers 503 `shutting_down` at once, new answers are refused, and the
answers generating here keep the process serving until they end or the
grace runs out (docs/operations.md, "Stopping").
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Drain:
    def __init__(self) -> None:
        self._began_at: float | None = None
        self._holds: list[Callable[[], int]] = []

    @property
    def draining(self) -> bool:
        return self._began_at is not None

    def begin(self) -> None:
        if self._began_at is None:
            self._began_at = time.monotonic()

    def seconds(self) -> float:
        """How long the drain has run (0 before it begins)."""
        return 0.0 if self._began_at is None else time.monotonic() - self._began_at

    def hold_while(self, count: Callable[[], int]) -> None:
        """Keep the process draining while `count()` is above 0 (answers generating
        here, say: a reader on another replica holds no connection here)."""
        self._holds.append(count)

    def held(self) -> bool:
        return any(count() > 0 for count in self._holds)
