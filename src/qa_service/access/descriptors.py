"""How many answers the open-file limit leaves room for.

Each answer holds descriptors, and past the limit accept() and connect()
fail with EMFILE: with RLIMIT_NOFILE at 1,024, 600 streams ended as 505
answers and 97 connection resets or empty replies, with no log line
(issue 25). Under QA_MAX_STREAMS, the cap therefore also stops where the
descriptors would run out, and refuses past it with 503 over_capacity.
"""

from __future__ import annotations

import resource

# What an answer holds: the client's connection and the provider's.
DESCRIPTORS_PER_STREAM = 2
# With Redis, one connection more per answer at the busiest: its appends and
# lease renewals (the pools may hold more, but share them between answers).
DESCRIPTORS_PER_STREAM_WITH_REDIS = 3
# What the process holds besides answers and its idle provider connections:
# its own files, the listening socket, its Redis pools' spare connections,
# and the client connections of requests being refused at the same moment.
DESCRIPTORS_RESERVED = 140


def open_file_limit() -> int | None:
    """The soft limit on open files, or None when there is none."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def streams_within(open_files: int | None, redis: bool, idle_connections: int) -> int | None:
    """Answers at once that `open_files` descriptors hold, or None for no bound;
    `idle_connections`: the provider connections kept open for reuse
    (QA_UPSTREAM_MAX_IDLE_CONNECTIONS, generation/upstream.py)."""
    if open_files is None:
        return None
    per_stream = DESCRIPTORS_PER_STREAM_WITH_REDIS if redis else DESCRIPTORS_PER_STREAM
    reserved = DESCRIPTORS_RESERVED + idle_connections
    return max(0, (open_files - reserved) // per_stream)
