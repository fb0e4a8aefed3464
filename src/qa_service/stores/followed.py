"""The answers this process's readers follow from a shared store: one read per
answer, however many readers, fanned out from memory.

A reader on a replica that does not generate its answer used to hold a Redis
connection of its own through each XREAD BLOCK: 80 readers of one answer took
the whole pool, and that replica refused 10 of 10 new answers with
store_unavailable (issue 20). Now the first local reader of an answer starts
one feed, which copies the log from seq 0 into a GrowingLog, and every local
reader waits on that; the feed stops when the last local reader leaves
(answers/readers.py owns that count). While this process writes the answer
itself, its readers read the mirror (stores/mirror.py) and the feed only waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from qa_service.core.errors import StoreUnavailableError
from qa_service.core.events import AnswerEvent, is_terminal
from qa_service.core.loops import Loop, pause
from qa_service.stores.growing import GrowingLog

log = logging.getLogger(__name__)

# Reads the store: the events after a seq, waiting up to some seconds for the first.
ReadLog = Callable[[str, int, float], Awaitable[list[AnswerEvent]]]


@dataclass(slots=True)
class FollowedLog(GrowingLog):
    # The feed could not read the store, or found events missing: every reader
    # of it ends with store_unavailable, and the next one starts a new feed.
    failed: bool = False

    async def after(self, seq: int, wait_seconds: float) -> list[AnswerEvent]:
        if self.failed and len(self.events) <= seq + 1:
            raise StoreUnavailableError  # nothing more will come: no need to wait
        events = await GrowingLog.after(self, seq, wait_seconds)
        if self.failed and not events:
            raise StoreUnavailableError
        return events


class FollowedAnswers:
    def __init__(
        self, read_log: ReadLog, held_here: Callable[[str], bool], poll_seconds: float = 0.5
    ) -> None:
        """`read_log` reads the store (one connection, for `poll_seconds` at most);
        `held_here(answer_id)`: this process's mirror serves the answer's readers."""
        self._read_log = read_log
        self._held_here = held_here
        self._poll = poll_seconds
        self._logs: dict[str, FollowedLog] = {}

    def start(self, answer_id: str) -> Loop:
        """Follow `answer_id` for this process's readers, until the loop is stopped."""
        followed = self._logs[answer_id] = FollowedLog()
        return Loop(lambda stop: self._feed(answer_id, followed, stop), "follow-answer")

    @property
    def followed(self) -> int:
        """How many answers this process follows now."""
        return len(self._logs)

    async def read(
        self, answer_id: str, after: int, wait_seconds: float
    ) -> list[AnswerEvent] | None:
        """The events after `after` (waiting up to `wait_seconds` for one), or
        None when no feed follows the answer here."""
        followed = self._logs.get(answer_id)
        if followed is None:
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
        """The store's log into `followed`, up to its last event, or until `stop`."""
        while not stop.is_set():
            if self._held_here(answer_id):
                await pause(stop, self._poll)
                continue
            if followed.events and is_terminal(followed.events[-1]):
                return  # all of it is here: the readers drain it from memory
            after = len(followed.events) - 1
            batch = await self._read_log(answer_id, after, self._poll)
            if batch and batch[0].seq != after + 1:
                # The store trimmed events the readers never had: never skip text.
                raise StoreUnavailableError
            for event in batch:
                followed.add(event)
