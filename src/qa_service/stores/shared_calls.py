"""One store call at a time per key, shared by everyone who asks meanwhile.

200 readers of one answer on a replica each ask, as their reads run dry,
whether its producer still holds its lease, and each resume asks where the
answer's log ends: at once, each took a pooled Redis connection of its own,
and a burst of them left the pool holding hundreds. Callers of the same key
while a call is under way get its result (or its error) instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedCalls(Generic[T]):
    def __init__(self) -> None:
        self._under_way: dict[str, asyncio.Future[T]] = {}

    async def call(self, key: str, make_call: Callable[[], Awaitable[T]]) -> T:
        under_way = self._under_way.get(key)
        if under_way is None:
            under_way = asyncio.ensure_future(make_call())
            self._under_way[key] = under_way
            under_way.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: one caller's cancel must not end the call the others wait on.
        return await asyncio.shield(under_way)

    def _finished(self, key: str, done: asyncio.Future[T]) -> None:
        if self._under_way.get(key) is done:
            del self._under_way[key]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have left before it failed

    async def aclose(self) -> None:
        """The store closes: calls still riding out an outage stop."""
        under_way = list(self._under_way.values())
        for call in under_way:
            call.cancel()
        await asyncio.gather(*under_way, return_exceptions=True)
