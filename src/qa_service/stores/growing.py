"""An answer's events in memory, with a wait for the next one: what the
in-process store and the Redis store's written answers both hold."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from qa_service.core.events import AnswerEvent


@dataclass(slots=True)
class GrowingLog:
    events: list[AnswerEvent] = field(default_factory=list)
    _grew: asyncio.Event = field(default_factory=asyncio.Event)
    # The seq of events[0]: a log copied from the middle of an answer starts past 0.
    first_seq: int = 0

    @property
    def last_seq(self) -> int:
        """The seq of its newest event (first_seq - 1 while it has none)."""
        return self.first_seq + len(self.events) - 1

    def add(self, event: AnswerEvent) -> None:
        self.events.append(event)
        self.wake()

    def wake(self) -> None:
        """Wake every waiting reader, then arm a fresh event for the next one."""
        grew, self._grew = self._grew, asyncio.Event()
        grew.set()

    async def after(self, seq: int, wait_seconds: float) -> list[AnswerEvent]:
        """The events after `seq`; waits up to `wait_seconds` for one if there are none."""
        if self.last_seq <= seq and wait_seconds > 0:
            grew = self._grew
            try:
                async with asyncio.timeout(wait_seconds):
                    await grew.wait()
            except TimeoutError:
                return []
        return self.events[max(0, seq + 1 - self.first_seq) :]
