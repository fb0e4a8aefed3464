"""A store's log in memory that takes batches as the Redis script does
(stores/redis_log.py): only where the log ends, never after its end. For unit
tests of the writer; it can fail, lose its newest batches, or forget it all."""

from __future__ import annotations

import asyncio

from qa_service.core.errors import StoreUnavailableError
from qa_service.core.events import AnswerEvent, is_terminal
from qa_service.stores.write_behind import BatchOutcome, BatchReply


class BatchLog:
    def __init__(self) -> None:
        self.events: list[AnswerEvent] = []
        self.fingerprint: str | None = None
        self.batches: list[list[AnswerEvent]] = []  # every batch it stored
        self.unavailable = False
        self.calls = 0
        self._grew = asyncio.Event()

    async def send(
        self, answer_id: str, fingerprint: str, events: list[AnswerEvent], rewrite: bool
    ) -> BatchReply:
        self.calls += 1
        if self.unavailable:
            raise StoreUnavailableError
        if self.events and is_terminal(self.events[-1]):
            return BatchReply(BatchOutcome.ENDED, len(self.events))
        if events[0].seq != len(self.events):
            return BatchReply(BatchOutcome.NOT_AT_END, len(self.events))
        self.events.extend(events)
        self.batches.append(list(events))
        self._grew.set()
        if rewrite:
            self.fingerprint = fingerprint
        return BatchReply(BatchOutcome.STORED, len(self.events))

    async def holding(self, count: int) -> None:
        """Wait until it holds `count` events (bounded by the caller's timeout)."""
        while len(self.events) < count:
            self._grew.clear()
            await self._grew.wait()

    def lose_newest(self, count: int) -> None:
        """A failover whose new primary had not received the newest events."""
        del self.events[len(self.events) - count :]

    def forget_everything(self) -> None:
        """A restart with nothing persisted."""
        self.events = []
        self.fingerprint = None
