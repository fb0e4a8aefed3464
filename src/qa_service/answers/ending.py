"""How an answer's producer ends: its last event in the log, then its lease released.

The last event goes at the log's next free seq, whatever a cancel cut short:
an append it interrupted may or may not be in the log, so after a refusal, or
an append whose outcome is unknown, the log's top says where the end goes
(or that the log has one already). Before, such an end was refused (its seq
taken), and readers were told the producer was lost (issue 20: 3-8 of 60
explicit cancels).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from contextlib import suppress

import anyio

from qa_service.answers.ports import AnswerStore
from qa_service.core.errors import StoreUnavailableError
from qa_service.core.events import AnswerEvent
from qa_service.core.loops import Loop

log = logging.getLogger(__name__)

# Appends of the last event, each after reading where the log's top is: one
# more than a cancel can leave in doubt, and a bound when the store misbehaves.
_LAST_EVENT_TRIES = 3


async def log_final(
    store: AnswerStore,
    answer_id: str,
    event: AnswerEvent,
    heartbeat: Loop | None,
    close_seconds: float,
) -> None:
    """The last event, then the lease goes.

    The appends have `2 * close_seconds` (what a cancel waits for them): no
    store call starts after that. Unbounded, three tries of an append and a
    read (3 s each) outlived shutdown's wait and ran on a closed Redis client.
    """
    # No call is cut short by a timeout of ours: an append cut short has an
    # outcome nobody knows (a 2.8 s Redis stall stored the end after it
    # timed out here, and this process's readers waited for it until the
    # TTL). The store bounds every call itself (QA_REDIS_URL: 3 s).
    try:
        await append_last(store, answer_id, event, close_seconds * 2)
    except StoreUnavailableError:
        log.warning("the answer's last event could not be stored")
    await end_lease(store, answer_id, heartbeat, close_seconds)


async def append_last(
    store: AnswerStore, answer_id: str, event: AnswerEvent, seconds: float
) -> None:
    """`event` at the log's next free seq, unless the log has ended already;
    no store call starts once `seconds` have passed."""
    clock = asyncio.get_running_loop()
    deadline = clock.time() + seconds
    for attempt in range(_LAST_EVENT_TRIES):
        if attempt and clock.time() >= deadline:
            break
        try:
            if await store.append(answer_id, event):
                return
        except StoreUnavailableError:
            pass  # maybe stored, maybe not: the log says
        if clock.time() >= deadline:
            break
        info = await store.describe_for_producer(answer_id)
        if info is None or info.final_seq is not None:
            if info is None or info.final_seq != event.seq:
                log.info("the answer's log had already been ended elsewhere")
            return
        # A text the cancel cut short was stored after all: the end goes after it.
        event = dataclasses.replace(event, seq=info.last_seq + 1)
    raise StoreUnavailableError


async def end_lease(
    store: AnswerStore, answer_id: str, heartbeat: Loop | None, close_seconds: float
) -> None:
    """Stop the heartbeat, then release the lease: a renewal still in flight
    would otherwise bring the lease back after its release."""
    if heartbeat is not None:
        await heartbeat.stop(close_seconds)
    # Readers waiting on a log that cannot grow learn it from the lease at once.
    with anyio.move_on_after(close_seconds, shield=True):
        with suppress(StoreUnavailableError):
            await store.release_lease(answer_id)
