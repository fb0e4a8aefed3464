"""QA_MAX_STREAMS: how many answers this process generates at once.

A counter, not a semaphore: over the cap a request is refused at once
(503 over_capacity), never queued, so a flood costs one comparison per request
and no upstream call. Only answers count: idle connections, resumes and
/healthz never take a place.
"""

from __future__ import annotations


class StreamCapacity:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def try_take(self) -> bool:
        """Take a place if one is free. Synchronous, so check and take cannot interleave."""
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def give_back(self) -> None:
        self.in_use -= 1
