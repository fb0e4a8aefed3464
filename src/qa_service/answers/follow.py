"""One reader of one answer: replay after a seq, then live, until its last event.

A reader needs no producer in its own process: it reads the store's log, so a
reconnect to any replica continues where the client's Last-Event-ID says.
While it reads it keeps its presence fresh (the producer's resume grace period
counts from when the last reader left), and when the log stops growing it
checks the producer's lease: a producer that died (SIGKILL, a lost host) is
declared lost in the log itself, so every reader ends the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from qa_service.answers.ports import AnswerStore
from qa_service.core.errors import (
    PRODUCER_LOST,
    SHUTTING_DOWN,
    STORE_UNAVAILABLE,
    StoreUnavailableError,
)
from qa_service.core.events import NOT_LOGGED, AnswerEvent, Failed, is_terminal


@dataclass(frozen=True, slots=True)
class FollowTiming:
    # A read waits this long for new events before it checks the producer's
    # lease and the stop signal; it bounds how late a shutdown notice comes.
    poll_seconds: float = 0.5
    # How long one touch of the reader's presence lasts (the resume grace).
    presence_seconds: float = 0.0


async def follow(
    store: AnswerStore,
    answer_id: str,
    after: int,
    timing: FollowTiming,
    stop: asyncio.Event | None = None,
    on_producer_lost: Callable[[], None] | None = None,
) -> AsyncGenerator[AnswerEvent]:
    """Every event with seq > `after`, until the answer's last one.

    Ends early, with a `Failed` at seq NOT_LOGGED (for this connection only),
    when `stop` is set or the store cannot be read.
    """
    touched = 0.0
    # Often enough that presence never lapses while the reader is attached,
    # seldom enough to cost Redis little: a quarter of the grace, at most 1 s.
    refresh = min(1.0, timing.presence_seconds / 4)
    while True:
        if stop is not None and stop.is_set():
            yield Failed(NOT_LOGGED, SHUTTING_DOWN)
            return
        try:
            if timing.presence_seconds > 0 and time.monotonic() - touched > refresh:
                await store.touch_reader(answer_id, timing.presence_seconds)
                touched = time.monotonic()
            batch = await store.read(answer_id, after, timing.poll_seconds)
            if not batch:
                lost = await _declare_lost(store, answer_id, after)
                if lost is not None:
                    if on_producer_lost is not None:
                        on_producer_lost()
                    yield lost
                    return
                continue
        except StoreUnavailableError:
            yield Failed(NOT_LOGGED, STORE_UNAVAILABLE)
            return
        for event in batch:
            yield event
            after = event.seq
            if is_terminal(event):
                return


async def _declare_lost(store: AnswerStore, answer_id: str, after: int) -> Failed | None:
    """The log has not grown: if its producer is gone, end it with producer_lost."""
    if await store.producer_alive(answer_id):
        return None
    info = await store.describe(answer_id)
    if info is None:
        # Expired or wiped (a Redis restart without persistence).
        raise StoreUnavailableError(STORE_UNAVAILABLE)
    if info.final_seq is not None:
        return None  # it ended meanwhile: the next read delivers the last event
    lost = Failed(after + 1, PRODUCER_LOST)
    # A compare-and-set: if the producer (or another reader) appended first,
    # the next read delivers what they wrote instead.
    return lost if await store.append(answer_id, lost) else None
