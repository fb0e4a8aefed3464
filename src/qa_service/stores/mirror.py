"""What this process wrote to Redis, kept in memory for the readers in this process.

Most readers are attached to the replica that generates their answer. Serving
them from the producer's own memory saves an XREAD round trip and a JSON
decode per piece, and Redis load with them; a reader elsewhere, or a resume
after the answer ended, still reads Redis. The mirror is exact because it
holds only what Redis accepted, in order, from seq 0; it starts empty when
this process creates the answer, so a reader that attaches before the first
event waits here too, not on Redis. It is forgotten when
the answer's last event is stored, or as soon as an append fails, is
refused (another writer ended the log) or is cut short (a deadline or a
cancel: Redis may store it later), so a reader then falls back to Redis and
sees what Redis has.
"""

from __future__ import annotations

from qa_service.core.events import AnswerEvent, is_terminal
from qa_service.stores.growing import GrowingLog


class LocalMirror:
    def __init__(self) -> None:
        self._answers: dict[str, GrowingLog] = {}

    def expect(self, answer_id: str) -> None:
        """This process created the answer, and will write its log from seq 0."""
        self._answers[answer_id] = GrowingLog()

    def stored(self, answer_id: str, event: AnswerEvent) -> None:
        """Redis accepted `event` from this process."""
        written = self._answers.get(answer_id)
        if event.seq == 0 and (written is None or written.events):
            written = self._answers[answer_id] = GrowingLog()
        if written is None or event.seq != len(written.events):
            self.forget(answer_id)
            return
        written.add(event)
        if is_terminal(event):
            # Readers waiting now still get it (they hold `written`); later
            # reads of an ended answer go to Redis.
            del self._answers[answer_id]

    def forget(self, answer_id: str) -> None:
        written = self._answers.pop(answer_id, None)
        if written is not None:
            written.wake()  # its readers go to Redis from now on

    def holds(self, answer_id: str) -> bool:
        """This process writes the answer, and its readers read it here."""
        return answer_id in self._answers

    async def read(
        self, answer_id: str, after: int, wait_seconds: float
    ) -> list[AnswerEvent] | None:
        """Events with seq > `after` (waiting up to `wait_seconds` for one), or
        None when this process does not hold the answer: ask Redis."""
        written = self._answers.get(answer_id)
        if written is None:
            return None
        return await written.after(after, wait_seconds)
