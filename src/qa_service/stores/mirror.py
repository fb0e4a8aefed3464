"""What this process wrote to Redis, kept in memory for the readers in this process.

Most readers are attached to the replica that generates their answer. Serving
them from the producer's own memory saves an XREAD round trip and a JSON
decode per piece, and Redis load with them; a reader elsewhere, or a resume
after the answer ended, still reads Redis. The mirror is exact because it
holds only what Redis accepted, in order, from seq 0. It is forgotten when
the answer's last event is stored, or as soon as an append fails or is
refused (another writer ended the log), so a reader then falls back to
Redis and sees what Redis has.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from qa_service.core.events import AnswerEvent, is_terminal


@dataclass(slots=True)
class _Written:
    events: list[AnswerEvent] = field(default_factory=list)
    grew: asyncio.Event = field(default_factory=asyncio.Event)


class LocalMirror:
    def __init__(self) -> None:
        self._answers: dict[str, _Written] = {}

    def stored(self, answer_id: str, event: AnswerEvent) -> None:
        """Redis accepted `event` from this process."""
        written = self._answers.get(answer_id)
        if event.seq == 0:
            written = self._answers[answer_id] = _Written()
        if written is None or event.seq != len(written.events):
            self.forget(answer_id)
            return
        written.events.append(event)
        self._wake(written)
        if is_terminal(event):
            # Readers waiting now still get it (they hold `written`); later
            # reads of an ended answer go to Redis.
            del self._answers[answer_id]

    def forget(self, answer_id: str) -> None:
        written = self._answers.pop(answer_id, None)
        if written is not None:
            self._wake(written)  # its readers go to Redis from now on

    async def read(
        self, answer_id: str, after: int, wait_seconds: float
    ) -> list[AnswerEvent] | None:
        """Events with seq > `after` (waiting up to `wait_seconds` for one), or
        None when this process does not hold the answer: ask Redis."""
        written = self._answers.get(answer_id)
        if written is None:
            return None
        if len(written.events) <= after + 1 and wait_seconds > 0:
            grew = written.grew
            try:
                async with asyncio.timeout(wait_seconds):
                    await grew.wait()
            except TimeoutError:
                return []
        return written.events[after + 1 :]

    @staticmethod
    def _wake(written: _Written) -> None:
        grew, written.grew = written.grew, asyncio.Event()
        grew.set()
