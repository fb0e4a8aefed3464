"""Reading an async generator ahead, in a task of its own, into a queue.

What the reader takes from the queue has already arrived, so it can take
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
# How often `close` repeats its cancel while the reading task has not ended.
RECANCEL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Ended:
    """The source ended; with its exception if it failed."""

    error: Exception | None = None


class ReadAhead(Generic[T]):
    """`source` read by a task of its own into `queue`, ending with an `Ended`.

    Must run inside the event loop; `close` (always, in a `finally`) cancels
    the task inside its wait for the source, which then closes the source.
    """

    def __init__(self, source: AsyncGenerator[T]) -> None:
        self.queue: asyncio.Queue[T | Ended] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._read(source))

    async def _read(self, source: AsyncGenerator[T]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with aclosing(source):
                turn = loop.time()
                async for item in source:
                    self.queue.put_nowait(item)
                    if loop.time() - turn > TURN_SECONDS:
                        # Everything one network read brought is parsed without
                        # a pause; under load that is a lot, and a long turn
                        # starves every other answer (leases lapsed at 200
                        # streams, benchmarks/load.py (d)). Let the loop run.
                        await asyncio.sleep(0)
                        turn = loop.time()
        # Exception, never BaseException: our own cancel must end the task as cancelled.
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which raises it
            self.queue.put_nowait(Ended(exc))
        else:
            self.queue.put_nowait(Ended())

    def waiting(self) -> list[T | Ended]:
        """Every item already in the queue, without waiting."""
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items

    def close(self) -> None:
        """Cancel the reading task; it closes the source as it ends.

        Not waited for: the reader may be a cancelled answer, which must end
        at once so that the answer's own closing of its upstream responses
        (generation/upstream.py) comes without delay. Waiting here made a
        hang-up's upstream close 1.5 s late under load (test_hangups.py).
        But made sure of: on Python 3.11 a source awaiting redis-py (whose
        commands go through asyncio.wait_for) can swallow the cancel
        (CPython gh-86296), and the task would read on for the answer's
        whole life; so the cancel is repeated until the task has ended.
        """
        self._cancel_until_done()

    def _cancel_until_done(self) -> None:
        if not self._task.done():
            self._task.cancel()
            asyncio.get_running_loop().call_later(RECANCEL_SECONDS, self._cancel_until_done)
