"""Reading an async generator ahead, in a task of its own.

What the reader takes has already arrived, so it can take
everything that is waiting at once (generation/batching.py), or wait for the
next item with a deadline (answers/coalescing.py) without ever cancelling
the source mid-step: a cancelled `anext()` would end an async generator.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# The longest the reading task keeps the event loop in one go.
TURN_SECONDS = 0.002


@dataclass(frozen=True, slots=True)
class Ended:
    """The source ended; with its exception if it failed."""

    error: Exception | None = None


class ReadAhead(Generic[T]):
    """`source` read by a task of its own, its items taken with `get` and
    `waiting`, ending with an `Ended`. One reader at a time.

    Must run inside the event loop; `close` (always, in a `finally`) cancels
    the task inside its wait for the source, which then closes the source.

    A list and a future, not an asyncio.Queue: every open stream holds one,
    and a Queue's three deques and Event cost 2.8 KB before its first item
    (benchmarks/stream_memory.py).
    """

    def __init__(self, source: AsyncGenerator[T]) -> None:
        self._items: list[T | Ended] = []
        # The reader's wait in `get`, while it has nothing to take.
        self._arrived: asyncio.Future[None] | None = None
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._read(source))

    async def get(self) -> T | Ended:
        """The next item, waiting for it if need be. A cancelled wait loses nothing."""
        while not self._items:
            self._arrived = asyncio.get_running_loop().create_future()
            try:
                await self._arrived
            finally:
                self._arrived = None
        return self._items.pop(0)

    def _put(self, item: T | Ended) -> None:
        self._items.append(item)
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    async def _read(self, source: AsyncGenerator[T]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with aclosing(source):
                turn = loop.time()
                async for item in source:
                    if self._closed:
                        break  # close's cancel was swallowed: see close
                    self._put(item)
                    if loop.time() - turn > TURN_SECONDS:
                        # Everything one network read brought is parsed without
                        # a pause; under load that is a lot, and a long turn
                        # starves every other answer (leases lapsed at 200
                        # streams, benchmarks/load.py (d)). Let the loop run.
                        await asyncio.sleep(0)
                        turn = loop.time()
        # Exception, never BaseException: our own cancel must end the task as cancelled.
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which raises it
            self._put(Ended(exc))
        else:
            self._put(Ended())

    def waiting(self) -> list[T | Ended]:
        """Every item already read, without waiting."""
        items, self._items = self._items, []
        return items

    def close(self) -> None:
        """Cancel the reading task; it closes the source as it ends.

        Not waited for: the reader may be a cancelled answer, which must end
        at once so that the answer's own closing of its upstream responses
        (generation/upstream.py) comes without delay. Waiting here made a
        hang-up's upstream close 1.5 s late under load (test_hangups.py).
        A source that awaits asyncio.wait_for (redis-py sends every command
        through it: a follow() under coalescing) can swallow the cancel on
        Python 3.11 (CPython gh-86296) and go on. It then stops at its next
        item, by the flag, and closes its source undisturbed; a repeated
        cancel could land in the source's own cleanup instead.
        """
        self._closed = True
        self._task.cancel()
