"""Short-lived values by key, in this process: stream tickets (access/tickets.py),
the chat index (answers/chats.py) and stored responses (answers/responses.py), by
default. Each is usable only on the replica that put it (QA_REDIS_URL shares
them: stores/redis_values.py)."""

from __future__ import annotations

import time
from collections.abc import Callable


class MemoryValues:
    """Values by key, each with its deadline.

    Every value of one store gets the same lifetime, and a put moves its key to
    the end, so they expire in insertion order: a sweep from the oldest keeps
    memory bounded at O(1) a value.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[float, str]] = {}  # oldest deadline first

    def __len__(self) -> int:
        return len(self._values)

    async def put(self, key: str, value: str, ttl_seconds: int) -> None:
        self._sweep()
        self._values.pop(key, None)
        self._values[key] = (self._clock() + ttl_seconds, value)

    async def get(self, key: str) -> str | None:
        found = self._values.get(key)
        if found is None or found[0] <= self._clock():
            return None
        return found[1]

    async def take(self, key: str) -> str | None:
        found = self._values.pop(key, None)
        if found is None or found[0] <= self._clock():
            return None
        return found[1]

    def _sweep(self) -> None:
        # Oldest first: stop at the first live one, without copying the rest.
        now = self._clock()
        while self._values:
            key, (deadline, _) = next(iter(self._values.items()))
            if deadline > now:
                break
            del self._values[key]
