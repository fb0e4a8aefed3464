"""One reader of one answer: replay after a seq, then live, until its last event.

A reader needs no producer in its own process: it reads the store's log, so a
reconnect to any replica continues where the client's Last-Event-ID says.
Its presence in the store, and the one read of the answer shared by every
reader in its process, are kept by its place (answers/readers.py), which its
caller holds. When the log stops growing it checks the producer's lease: a
producer that died (SIGKILL, a lost host) is declared lost in the log itself,
so every reader ends the same way. A
producer in the reader's own process is known alive without its lease: on a
busy machine its heartbeat can come late and the lease lapse while it runs.
"""

from __future__ import annotations

import asyncio
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


async def follow(
    store: AnswerStore,
    answer_id: str,
    after: int,
    timing: FollowTiming,
    stop: asyncio.Event | None = None,
    on_producer_lost: Callable[[], None] | None = None,
    generating_here: Callable[[], bool] | None = None,
) -> AsyncGenerator[AnswerEvent]:
    """Every event with seq > `after`, until the answer's last one.

    Ends early, with a `Failed` at seq NOT_LOGGED (for this connection only),
    when `stop` is set, or the store cannot be read or has lost events.
    `generating_here()` says whether this process is generating the answer
    right now.
    """
    while True:
        if stop is not None and stop.is_set():
            yield Failed(NOT_LOGGED, SHUTTING_DOWN)
            return
        try:
            batch = await store.read(answer_id, after, timing.poll_seconds)
            if not batch:
                end = await _end_without_events(store, answer_id, after, generating_here)
                if end is _LOG_OVER:
                    return
                if isinstance(end, Failed):
                    if on_producer_lost is not None:
                        on_producer_lost()
                    yield end
                    return
                continue
        except StoreUnavailableError:
            yield Failed(NOT_LOGGED, STORE_UNAVAILABLE)
            return
        if batch[0].seq != after + 1:
            # The store trimmed events this reader never had: never skip text.
            yield Failed(NOT_LOGGED, STORE_UNAVAILABLE)
            return
        for event in batch:
            yield event
            after = event.seq
            if is_terminal(event):
                return


_LOG_OVER = object()


async def _end_without_events(
    store: AnswerStore,
    answer_id: str,
    after: int,
    generating_here: Callable[[], bool] | None,
) -> object:
    """The log has not grown. None: keep waiting. _LOG_OVER: it ended and the
    reader had its last event. A Failed: its producer is gone, and this reader
    ended the log with producer_lost (or found it ended before events it had)."""
    if generating_here is not None and generating_here():
        return None  # alive, whatever its lease says: it runs in this process
    if await store.producer_alive(answer_id):
        return None
    info = await store.describe(answer_id)
    if info is None:
        # Expired or wiped (a Redis restart without persistence).
        raise StoreUnavailableError(STORE_UNAVAILABLE)
    if info.final_seq is not None:
        if after > info.final_seq:
            return _ahead_of_the_log(after)
        # It ended meanwhile: the next read delivers the last event, unless
        # this reader has it already.
        return _LOG_OVER if after == info.final_seq else None
    if info.last_seq > after:
        return None  # the next read delivers them
    # A compare-and-set where the store's copy ends: if the producer (or
    # another reader) appended first, the next read delivers what they wrote.
    lost = Failed(info.last_seq + 1, PRODUCER_LOST)
    if not await store.append(answer_id, lost):
        return None
    return lost if lost.seq == after + 1 else _ahead_of_the_log(after)


def _ahead_of_the_log(after: int) -> Failed:
    """The end for a reader that had more of the answer than the store's log:
    it read the producer's memory, whose last batch never reached the store
    before the producer died (stores/write_behind.py). Its id is past
    everything the reader has, so the reader ends there; it is logged nowhere."""
    return Failed(after + 1, PRODUCER_LOST)
