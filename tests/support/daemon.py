"""Waiting for a condition, with a deadline: the one readiness loop of every daemon runner.

The service, redis-server, nginx and the compose stack each start a process
and then wait until it answers. They, and any test that waits for something
to happen, poll a predicate until it holds; none sleeps a fixed time and hopes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class NotReadyError(RuntimeError):
    """A condition did not hold by its deadline."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.02,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Fails with NotReadyError naming `what` (and `describe()`, if given: the
    log of the process that never got ready, say) once `timeout` seconds have
    passed. The predicate may raise to stop the wait early (a process that
    exited will never answer).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f":\n{describe()}" if describe is not None else ""
            raise NotReadyError(f"{what}: not within {timeout:g} s{detail}")
        time.sleep(interval)


async def poll_until(
    predicate: Callable[[], Awaitable[T]], seconds: float, what: str, *, interval: float = 0.02
) -> T:
    """`wait_until` for a coroutine's answer (a store or server read in an async test)."""
    deadline = time.monotonic() + seconds
    while not (result := await predicate()):
        if time.monotonic() >= deadline:
            raise NotReadyError(f"{what}: not within {seconds:g} s")
        await asyncio.sleep(interval)
    return result
