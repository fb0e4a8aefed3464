"""How many answers this process generates at once: three bounds, the lowest wins.

- QA_MAX_STREAMS, the hard ceiling, or QA_UPSTREAM_MAX_CONNECTIONS when
  lower: each answer holds a provider connection, and one admitted past the
  pool would wait for one, through the SDK's retries and the fallback's
  (about 16 s, 33 s with a fallback, with the defaults), to end over_capacity
  anyway;
- what the open-file limit leaves room for (access/descriptors.py), said
  once in the log the first time it refuses;
- the adaptive limit (access/adaptive_limit.py), when on: what the event
  loop keeps up with.

A counter, not a semaphore: past the bound a request is refused at once
(503 over_capacity), never queued, so a flood costs one comparison per request
and no upstream call. Only answers count: idle connections, resumes and
/healthz never take a place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from qa_service.access.adaptive_limit import AdaptiveLimit, SmoothedLag

log = logging.getLogger(__name__)

# Which bound refused an answer (qa_over_capacity_refusals' `bound`): an
# operator raises QA_MAX_STREAMS, the open-file limit, or adds instances.
MAX_STREAMS = "max_streams"
OPEN_FILES = "open_files"
ADAPTIVE = "adaptive"


class StreamCapacity:
    def __init__(
        self,
        limit: int,
        descriptors_allow: int | None = None,
        adaptive: AdaptiveLimit | None = None,
    ) -> None:
        self.limit = limit
        self.descriptors_allow = descriptors_allow
        self.adaptive = adaptive
        # What the lag probe feeds: the adaptive limit, or the lag alone.
        self.loop_lag: AdaptiveLimit | SmoothedLag = adaptive or SmoothedLag()
        self.in_use = 0
        self._said_descriptors = False
        # Told which bound refused, each time one does (a metric's counter).
        self.on_refused: Callable[[str], None] = lambda bound: None

    def try_take(self) -> bool:
        """Take a place if one is free. Synchronous, so check and take cannot interleave."""
        bound = self._bound_reached()
        if bound is not None:
            self.on_refused(bound)
            return False
        self.in_use += 1
        return True

    def _bound_reached(self) -> str | None:
        if self.in_use >= self.limit:
            return MAX_STREAMS
        if self.descriptors_allow is not None and self.in_use >= self.descriptors_allow:
            self._say_descriptors_ran_out()
            return OPEN_FILES
        if self.adaptive is not None and self.in_use >= self.adaptive.limit:
            return ADAPTIVE
        return None

    def give_back(self) -> None:
        self.in_use -= 1

    def current_limit(self) -> int:
        """The bound that applies now, the lowest of the three (a metric)."""
        bounds = [self.limit]
        if self.descriptors_allow is not None:
            bounds.append(self.descriptors_allow)
        if self.adaptive is not None:
            bounds.append(self.adaptive.limit)
        return min(bounds)

    def _say_descriptors_ran_out(self) -> None:
        # Once per process: a flood would otherwise write a line per refusal,
        # and the one line already says what to change.
        if self._said_descriptors:
            return
        self._said_descriptors = True
        log.warning(
            "open file limit reached: new answers are refused with 503 over_capacity"
            " until some end; raise the limit (ulimit -n, LimitNOFILE) to serve more",
            extra={"streams": self.in_use, "streams_allowed": self.descriptors_allow},
        )
