"""How long a process's threads waited for a CPU (/proc/<pid>/task/*/schedstat), for tests.

On a shared machine a latency sample can be slow only because the service,
or the test measuring it, was runnable and not run: another job had the
CPU. The kernel counts that time per thread, as the second field of
schedstat (nanoseconds on the run queue). Where the kernel does not provide
it, every reading is 0, and a latency counts in full.
"""

from __future__ import annotations

from pathlib import Path


def cpu_wait_seconds(pid: int | str = "self") -> float:
    """Seconds the threads of `pid` have spent runnable but not running, so far."""
    waited = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            waited += int(task.read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile, or no schedstat
    return waited / 1e9
