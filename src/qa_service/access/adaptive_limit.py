"""An adaptive limit on answers at once, moved by the event loop's lag.

Under QA_MAX_STREAMS, a process that cannot keep up (a saturated core) used
to admit every newcomer, and each waited behind all the answers already
running: time to first text p99 6.2 s with 100 streams in a closed loop
(issue 25). This limit follows what the process keeps up with instead, so
a newcomer past it is refused at once (503 over_capacity, Retry-After) and a
load balancer can try another instance.

The algorithm is a gradient controller in the spirit of Netflix's
concurrency-limits (Gradient2, AIMD) and Envoy's adaptive concurrency
filter, with the event loop's lag as its latency signal: every answer,
running or starting, shares one loop, so when it falls behind, everything
waits, first texts included. A timer measures how late it fires
(`LoopLagProbe`); the lag is smoothed, and then:

- above the target (QA_ADAPTIVE_LIMIT_LAG_MS), the limit comes down to the
  answers in flight times target/lag (at least half of them): it follows
  what runs now, not a stale high value;
- at or below it, while the limit binds (answers in flight at least half of
  it), it probes upward by one answer a sample (AIMD's additive increase);
- at or below it, while the process is far from its limit, the limit grows
  back towards the ceiling by a tenth a sample, so a burst after a busy spell
  is admitted as before it.

No library fitted: the ones on PyPI limit a client's calls to a slow API
(adaptive-concurrency, async-limiter), not a server's admissions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# How often the loop's lag is sampled: often enough to react within a tenth
# of a second, rarely enough to cost nothing (one timer callback).
SAMPLE_SECONDS = 0.025
# The smoothing of the lag: a sample weighs a quarter, so one long callback
# (a collection, a big /metrics) moves it little, while a loop that stays
# behind is seen within about four samples.
SMOOTHING = 0.25
# A cut keeps at least half of the answers in flight (Gradient2's bound).
MIN_GRADIENT = 0.5
# While far from the limit, it grows back by this share a sample.
REGROWTH = 0.1


class AdaptiveLimit:
    """The limit and the smoothed lag it is moved by; `observe` is one sample."""

    def __init__(self, ceiling: int, floor: int, target_lag_seconds: float) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.target = target_lag_seconds
        self.lag = 0.0
        self._limit = float(ceiling)

    @property
    def limit(self) -> int:
        return int(self._limit)

    def observe(self, lag_seconds: float, in_flight: int) -> None:
        """One sample of the loop's lag, with the answers in flight as it was taken."""
        self.lag += SMOOTHING * (lag_seconds - self.lag)
        if self.lag > self.target:
            gradient = max(MIN_GRADIENT, self.target / self.lag)
            self._limit = max(self.floor, min(self._limit, in_flight * gradient))
        elif in_flight >= self._limit / 2:
            self._limit = min(self.ceiling, self._limit + 1)
        else:
            self._limit = min(self.ceiling, self._limit * (1 + REGROWTH))


class SmoothedLag:
    """The loop's lag, smoothed as AdaptiveLimit smooths it, with the limit off:
    qa_event_loop_lag_seconds says a core is saturated whether or not it refuses."""

    def __init__(self) -> None:
        self.lag = 0.0

    def observe(self, lag_seconds: float, in_flight: int) -> None:
        self.lag += SMOOTHING * (lag_seconds - self.lag)


class LoopLagProbe:
    """A timer on the running loop, every `interval`, handing `on_lag` how late it fired.

    A callback, not a task: a task's wake-up takes a second turn of the loop,
    and the lag would then include it. Must start and stop inside the loop.
    """

    def __init__(self, on_lag: Callable[[float], None], interval: float = SAMPLE_SECONDS) -> None:
        self._on_lag = on_lag
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        self._due = self._loop.time() + self._interval
        self._handle = self._loop.call_at(self._due, self._fire)

    def _fire(self) -> None:
        now = self._loop.time()
        self._on_lag(max(0.0, now - self._due))
        self._due = now + self._interval
        self._handle = self._loop.call_at(self._due, self._fire)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
