"""The answer cache in this process (stores/redis_cache.py shares it between replicas).

Recordings are bounded in bytes (QA_ANSWER_CACHE_MAX_MB): past the bound the
least recently used goes first. Each also expires at its deadline. Flights
(answers/cache/ports.py) are a dict: every step runs without an await, so
each is atomic in the event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Flight:
    answer_id: str
    readers: int
    until: float


class MemoryCacheStore:
    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_bytes = max_bytes
        self._clock = clock
        # Least recently used first: (deadline, recording).
        self._recordings: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._flights: dict[str, _Flight] = {}

    @property
    def size_bytes(self) -> int:
        """The recordings' bytes held now (never above the bound)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._recordings)

    async def get(self, key: str) -> bytes | None:
        found = self._recordings.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            self._drop(key)
            return None
        self._recordings.move_to_end(key)
        return found[1]

    async def put(self, key: str, recording: bytes, ttl_seconds: int) -> None:
        if key in self._recordings:
            self._drop(key)
        if len(recording) > self._max_bytes:
            return  # it would evict everything, and still not fit
        self._recordings[key] = (self._clock() + ttl_seconds, recording)
        self._bytes += len(recording)
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._recordings)))

    def _drop(self, key: str) -> None:
        _, recording = self._recordings.pop(key)
        self._bytes -= len(recording)

    async def join_or_start(
        self, key: str, answer_id: str, max_readers: int, ttl_seconds: int
    ) -> tuple[str, bool] | None:
        now = self._clock()
        flight = self._flights.get(key)
        if flight is not None and flight.until > now:
            if flight.readers >= max_readers:
                return None
            flight.readers += 1
            return flight.answer_id, False
        self._sweep_flights(now)
        self._flights[key] = _Flight(answer_id, 1, now + ttl_seconds)
        return answer_id, True

    async def leave(self, key: str, answer_id: str) -> int | None:
        flight = self._flights.get(key)
        if flight is None or flight.answer_id != answer_id:
            return None
        flight.readers -= 1
        if flight.readers <= 0:
            del self._flights[key]
        return max(flight.readers, 0)

    async def end(self, key: str, answer_id: str) -> None:
        flight = self._flights.get(key)
        if flight is not None and flight.answer_id == answer_id:
            del self._flights[key]

    def _sweep_flights(self, now: float) -> None:
        # Only flights whose answer's end never came (its task's bookkeeping
        # cut short) outlive their deadline: rare, so a full pass is cheap.
        for key in [key for key, flight in self._flights.items() if flight.until <= now]:
            del self._flights[key]
