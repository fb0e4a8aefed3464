"""The in-process ticket store: the default. A ticket is redeemable only on the
replica that issued it (QA_REDIS_URL shares them)."""

from __future__ import annotations

import time
from collections.abc import Callable


class MemoryTicketStore:
    """Grants by ticket digest, each with its deadline.

    Every ticket gets the same lifetime, so they expire in the order they were
    put: a sweep from the oldest keeps memory bounded at O(1) a ticket.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._grants: dict[str, tuple[float, str]] = {}  # in insertion order

    def __len__(self) -> int:
        return len(self._grants)

    async def put(self, digest: str, grant: str, ttl_seconds: int) -> None:
        self._sweep()
        self._grants[digest] = (self._clock() + ttl_seconds, grant)

    async def take(self, digest: str) -> str | None:
        found = self._grants.pop(digest, None)
        if found is None or found[0] <= self._clock():
            return None
        return found[1]

    def _sweep(self) -> None:
        # Oldest first (insertion order, one TTL for all): stop at the first live one,
        # without copying the rest.
        now = self._clock()
        while self._grants:
            digest, (deadline, _) = next(iter(self._grants.items()))
            if deadline > now:
                break
            del self._grants[digest]
