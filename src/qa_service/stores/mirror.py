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
cancel: Redis may store it later). Letting go, it hands what it held to the
answer's feed (stores/followed.py), so a reader then reads that memory, and
only what Redis has beyond it.
"""

from __future__ import annotations

from collections.abc import Callable

from qa_service.core.events import AnswerEvent, is_terminal
from qa_service.stores.growing import GrowingLog

# Told an answer's id and every event the mirror held of it (from seq 0), as it lets go.
LetGo = Callable[[str, list[AnswerEvent]], None]


class LocalMirror:
    def __init__(self, on_let_go: LetGo | None = None) -> None:
        """`on_let_go`: called, before any reader can ask again, when the mirror
        stops holding an answer (stores/followed.py takes its events over)."""
        self._answers: dict[str, GrowingLog] = {}
        self._on_let_go = on_let_go

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
            # reads of an ended answer go to its feed, or to Redis.
            del self._answers[answer_id]
            self._let_go(answer_id, written)

    def forget(self, answer_id: str) -> None:
        written = self._answers.pop(answer_id, None)
        if written is not None:
            written.wake()  # its readers go to its feed, or Redis, from now on
            self._let_go(answer_id, written)

    def _let_go(self, answer_id: str, written: GrowingLog) -> None:
        if self._on_let_go is not None:
            self._on_let_go(answer_id, written.events)

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
