"""What the answer cache needs from a store: recordings by key, and flights.

A flight is the answer being written for a key, with how many readers it has
(the asker's answer and the joiners'), so that:
- a question asked meanwhile joins it, up to a bound, and past it starts another;
- when its last reader leaves early, the answer is cancelled (answer_cache.py).
Both backends make each step atomic (stores/memory_cache.py, redis_cache.py).
"""

from __future__ import annotations

from typing import Protocol


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The recording kept under `key`, or None (never kept, expired or evicted)."""

    async def put(self, key: str, recording: bytes, ttl_seconds: int) -> None:
        """Keep `recording` under `key` for `ttl_seconds`, replacing any before it."""

    async def join_or_start(
        self, key: str, answer_id: str, max_readers: int, ttl_seconds: int
    ) -> tuple[str, bool] | None:
        """One more reader of `key`'s flight: (its answer id, False); or, with no
        flight, a new one of `answer_id` with this one reader, for at most
        `ttl_seconds`: (answer_id, True). None: the flight has `max_readers` already."""

    async def leave(self, key: str, answer_id: str) -> int | None:
        """One reader fewer of `answer_id`'s flight; how many are left (the flight
        ends at 0). None: `key` has no flight of `answer_id` (it ended)."""

    async def end(self, key: str, answer_id: str) -> None:
        """`answer_id`'s flight is over (it ended): later questions do not join it."""
