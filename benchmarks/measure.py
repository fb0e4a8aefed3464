"""What every benchmark reads the same way: a process's CPU time, a percentile."""

from __future__ import annotations

import psutil


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 to 1) of `samples`."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
