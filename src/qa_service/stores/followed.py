"""The answers this process's readers follow from a shared store: one read per
answer, however many readers, fanned out from memory.

A reader on a replica that does not generate its answer used to hold a Redis
connection of its own through each XREAD BLOCK: 80 readers of one answer took
the whole pool, and that replica refused 10 of 10 new answers with
store_unavailable (issue 20). Now the first local reader of an answer starts
one feed, and every local reader waits on its FollowedLog; the feed stops when
the last local reader leaves (answers/readers.py owns that count).

The feed reads nothing until its log knows where it starts:
- on the replica that writes the answer, its readers read what it writes
  (stores/write_behind.py), and when that lets go (the store holds the last
  event) it hands its events over, from seq 0, before any reader can ask
  again: an ended answer is then served whole from memory with no read of the
  store. The feed used to wake every 0.5 s to check, then copy the whole log
  from Redis once it was let go, while a reader that came a moment late found
  it empty and waited for that copy;
- elsewhere, the first reader places it at the seq it needs next, so a late
  resume no longer waits for a copy of the whole log from seq 0. A reader that
  needs events older than the log's start reads the store directly until it
  catches up (`read` gives None).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from qa_service.core.errors import StoreUnavailableError
from qa_service.core.events import AnswerEvent, is_terminal
from qa_service.core.loops import Loop
from qa_service.stores.growing import GrowingLog

log = logging.getLogger(__name__)

# Reads the store: the events after a seq, waiting up to some seconds for the first.
ReadLog = Callable[[str, int, float], Awaitable[list[AnswerEvent]]]


@dataclass(slots=True)
class FollowedLog(GrowingLog):
    # The feed could not read the store, or found events missing: every reader
    # of it ends with store_unavailable, and the next one starts a new feed.
    failed: bool = False
    # Set once the log knows its first seq (a hand-over, or its first reader):
    # the feed waits for it, reading nothing before.
    placed: asyncio.Event = field(default_factory=asyncio.Event)

    def place(self, first_seq: int, events: list[AnswerEvent]) -> None:
        self.first_seq = first_seq
        self.events = list(events)
        self.placed.set()
        self.wake()

    async def after(self, seq: int, wait_seconds: float) -> list[AnswerEvent]:
        if self.failed and self.last_seq <= seq:
            raise StoreUnavailableError  # nothing more will come: no need to wait
        events = await GrowingLog.after(self, seq, wait_seconds)
        if self.failed and not events:
            raise StoreUnavailableError
        return events


class FollowedAnswers:
    def __init__(self, read_log: ReadLog, poll_seconds: float) -> None:
        """`read_log` reads the store (one connection, for `poll_seconds` at most:
        answers/follow.py's FollowTiming, so a stopped feed ends as soon)."""
        self._read_log = read_log
        self._poll = poll_seconds
        self._logs: dict[str, FollowedLog] = {}

    def start(self, answer_id: str) -> Loop:
        """Follow `answer_id` for this process's readers, until the loop is stopped."""
        followed = self._logs[answer_id] = FollowedLog()
        return Loop(lambda stop: self._feed(answer_id, followed, stop), "follow-answer")

    def hand_over(self, answer_id: str, events: list[AnswerEvent]) -> None:
        """This process stops writing `answer_id`, having held `events` from seq 0."""
        followed = self._logs.get(answer_id)
        if followed is not None and not followed.placed.is_set():
            followed.place(0, events)

    @property
    def followed(self) -> int:
        """How many answers this process follows now."""
        return len(self._logs)

    async def read(
        self, answer_id: str, after: int, wait_seconds: float
    ) -> list[AnswerEvent] | None:
        """The events after `after` (waiting up to `wait_seconds` for one), or
        None when no feed follows the answer here, or it starts after the
        events this reader needs: read the store."""
        followed = self._logs.get(answer_id)
        if followed is None:
            return None
        if not followed.placed.is_set():
            followed.place(after + 1, [])  # the feed starts where its first reader is
        elif after + 1 < followed.first_seq:
            return None
        return await followed.after(after, wait_seconds)

    async def _feed(self, answer_id: str, followed: FollowedLog, stop: asyncio.Event) -> None:
        try:
            try:
                await self._copy(answer_id, followed, stop)
            # Any failure (never BaseException: a cancel must end the feed): a feed
            # that died silently would leave its readers waiting for ever.
            except Exception as exc:  # noqa: BLE001
                if not isinstance(exc, StoreUnavailableError):
                    log.warning("answer feed failed (%s)", type(exc).__name__)
                followed.failed = True
                followed.wake()
            # Kept for the readers still attached, until the last one leaves.
            await stop.wait()
        finally:
            if self._logs.get(answer_id) is followed:
                del self._logs[answer_id]

    async def _copy(self, answer_id: str, followed: FollowedLog, stop: asyncio.Event) -> None:
        """The store's log into `followed`, from where it is placed up to its
        last event, or until `stop`."""
        if not await _first_of(followed.placed, stop):
            return
        while not stop.is_set():
            if followed.events and is_terminal(followed.events[-1]):
                return  # all of it is here: the readers drain it from memory
            after = followed.last_seq
            batch = await self._read_log(answer_id, after, self._poll)
            if batch and batch[0].seq != after + 1:
                # The store trimmed events the readers never had: never skip text.
                raise StoreUnavailableError
            for event in batch:
                followed.add(event)


async def _first_of(wanted: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until `wanted` or `stop` is set; True if `wanted` was (and `stop` not)."""
    waits = {asyncio.ensure_future(wanted.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return wanted.is_set() and not stop.is_set()
