"""Riding out a store that fails for a while: a failover, a restart, a blip.

Redis Sentinel promotes a replica within seconds, a cluster moves a primary's
slots to its replica, a restarted Redis comes back empty: none of it should end
an answer. A caller that meets StoreUnavailableError asks its `Outage` whether
to try again; it waits a little longer each time (0.1 s up to 1 s), and says
no once the store has failed for longer than its bound (QA_REDIS_OUTAGE_SECONDS).
"""

from __future__ import annotations

import asyncio

_FIRST_WAIT_SECONDS = 0.1
_LONGEST_WAIT_SECONDS = 1.0


class Outage:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._began: float | None = None
        self._wait = _FIRST_WAIT_SECONDS

    async def wait_before_retry(self) -> bool:
        """After a failure: wait, then True to try again; False (at once) once
        the failures have lasted longer than the bound."""
        clock = asyncio.get_running_loop().time()
        if self._began is None:
            self._began = clock
        left = self._began + self._seconds - clock
        if left <= 0:
            return False
        await asyncio.sleep(min(self._wait, left))
        self._wait = min(self._wait * 2, _LONGEST_WAIT_SECONDS)
        return True

    def over(self) -> None:
        """A call succeeded: the next failure starts a new outage."""
        self._began = None
        self._wait = _FIRST_WAIT_SECONDS


class StoreHealth:
    """When this process last saw the store fail: until it has worked for a
    while since, the absence of a lease or of a reader's presence proves
    nothing (they may have been lost with the store, and not renewed yet)."""

    def __init__(self) -> None:
        self._last_failure: float | None = None

    def failed(self) -> None:
        self._last_failure = asyncio.get_running_loop().time()

    def steady_for(self, seconds: float) -> bool:
        """The store has not failed here within the last `seconds`."""
        if self._last_failure is None:
            return True
        return asyncio.get_running_loop().time() - self._last_failure >= seconds
