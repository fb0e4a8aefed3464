"""The answers this process writes to a shared store: held whole in memory,
written behind in batches, and written again after the store loses them.

The producer's appends land here at once, and the readers in this process read
them from here (most readers are attached to the replica that generates their
answer: no store round trip, no decode). One writer task per answer sends what
is new to the store every `batch_seconds` (the last event at once), in one call:
a provider piece then costs a fraction of a Redis command instead of four.

Because the whole answer stays here until the store holds its last event, the
store may fail over, restart empty, or be unreachable for a while
(`outage_seconds`), and no answer is lost: the store's reply says how much of
the log it holds, and the writer sends the rest again from there (after a
restart, from the first event, with the answer's fingerprint). Readers
elsewhere may wait meanwhile; they never see a gap or a repeat, because the
store takes a batch only where its log ends (stores/redis_log.py).

An answer is let go once the store holds its last event: its events go to
its feed (stores/followed.py), from seq 0, so its readers here read on from
memory. It is also let go, with nothing handed over, when its log was ended
elsewhere (a reader there declared this producer lost: its readers here read
the store, and end as it says) or the outage outlasted its bound: then the
producer's next event, and every read of it here, get store_unavailable
until the producer has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from qa_service.core.errors import StoreUnavailableError
from qa_service.core.events import AnswerEvent, is_terminal
from qa_service.core.loops import pause
from qa_service.core.outages import Outage
from qa_service.stores.growing import GrowingLog

log = logging.getLogger(__name__)


class BatchOutcome(Enum):
    STORED = 1
    ENDED = 0  # the log has its last event: the batch is refused
    NOT_AT_END = 2  # the log does not end right before the batch


@dataclass(frozen=True, slots=True)
class BatchReply:
    outcome: BatchOutcome
    # The seq the log's next event would have: how much of the answer the store holds.
    next_seq: int


# Sends events (the first at the seq the store's log should end before) to the
# store; `rewrite` also restores the answer's own keys. Raises StoreUnavailableError.
SendBatch = Callable[[str, str, list[AnswerEvent], bool], Awaitable[BatchReply]]
# Told an answer's id and every event held of it (from seq 0), as it is let go.
LetGo = Callable[[str, list[AnswerEvent]], None]


@dataclass(frozen=True, slots=True)
class WriteTiming:
    # What a producer makes within this long goes to the store in one call,
    # while a reader on another instance follows the answer (QA_REDIS_BATCH_MS);
    # the answer's last event goes at once.
    batch_seconds: float = 0.05
    # The same while no reader elsewhere follows it (QA_REDIS_UNWATCHED_BATCH_MS):
    # only resumes and failovers need the store's copy then, and a longer batch
    # costs Redis fewer commands per piece (at 50 pieces a second, 50 ms
    # batches cost about 1.2 commands a piece).
    unwatched_batch_seconds: float = 1.0
    # How long the store may fail before answers give up on it (QA_REDIS_OUTAGE_SECONDS).
    outage_seconds: float = 30.0


@dataclass(slots=True)
class WrittenLog(GrowingLog):
    fingerprint: str = ""
    # How many of `events` the store holds, as far as this process knows.
    stored: int = 0
    # The store lost the log (or never had it): the next batch rewrites its keys.
    rewrite: bool = True
    ended_elsewhere: bool = False
    failed: bool = False  # the outage outlasted `outage_seconds`
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    pending: asyncio.Event = field(default_factory=asyncio.Event)
    # A reader on another instance follows the answer (the store says, at
    # each heartbeat): its batches are short.
    watched: bool = False
    # The last event is here, or a reader elsewhere came: the batch goes now.
    hurry: asyncio.Event = field(default_factory=asyncio.Event)

    async def after(self, seq: int, wait_seconds: float) -> list[AnswerEvent]:
        if self.failed:
            raise StoreUnavailableError
        events = await GrowingLog.after(self, seq, wait_seconds)
        if self.failed and not events:
            raise StoreUnavailableError
        return events


class WrittenAnswers:
    def __init__(self, send: SendBatch, timing: WriteTiming, on_let_go: LetGo) -> None:
        self._send = send
        self._timing = timing
        self._on_let_go = on_let_go
        self._answers: dict[str, WrittenLog] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        # Answers whose store stayed away too long: their producer's next event,
        # and their readers here, get store_unavailable until the producer ends.
        self._given_up: set[str] = set()

    def expect(self, answer_id: str, fingerprint: str) -> None:
        """This process created the answer, and will write its log from seq 0."""
        self._answers[answer_id] = WrittenLog(fingerprint=fingerprint)
        self._writers[answer_id] = asyncio.get_running_loop().create_task(
            self._write(answer_id), name="write-answer"
        )

    def holds(self, answer_id: str) -> bool:
        """This process writes the answer, and its readers read it here."""
        return answer_id in self._answers or answer_id in self._given_up

    def producer_done(self, answer_id: str) -> None:
        """The answer's producer has ended (it released its lease)."""
        self._given_up.discard(answer_id)

    def add(self, answer_id: str, event: AnswerEvent) -> bool:
        """Take the producer's next event; False if the log was ended elsewhere.
        Raises StoreUnavailableError once the store has been gone too long."""
        if answer_id in self._given_up:
            raise StoreUnavailableError
        written = self._answers.get(answer_id)
        if written is None or written.ended_elsewhere:
            return False
        if written.failed:
            raise StoreUnavailableError
        if event.seq != written.last_seq + 1:
            return False  # not the next seq: refused, as the store would
        written.add(event)
        written.pending.set()
        if is_terminal(event):
            written.hurry.set()
        return True

    async def wait_settled(self, answer_id: str) -> bool:
        """Wait until the store holds the answer's last event: True, or False
        if the log was ended elsewhere. Raises StoreUnavailableError when the
        outage outlasted its bound."""
        written = self._answers.get(answer_id)
        if written is None:
            if answer_id in self._given_up:
                raise StoreUnavailableError
            return False
        await written.settled.wait()
        if written.failed:
            raise StoreUnavailableError
        return not written.ended_elsewhere

    def set_watched_elsewhere(self, answer_id: str, watched: bool) -> None:
        """Whether a reader on another instance follows the answer now."""
        written = self._answers.get(answer_id)
        if written is None:
            return
        if watched and not written.watched:
            written.hurry.set()  # what it waited for goes now, not a long batch later
        written.watched = watched

    def is_watched_elsewhere(self, answer_id: str) -> bool:
        written = self._answers.get(answer_id)
        return written is not None and written.watched

    def _batch_seconds(self, written: WrittenLog) -> float:
        timing = self._timing
        return timing.batch_seconds if written.watched else timing.unwatched_batch_seconds

    def rewrite_all(self, answer_id: str) -> None:
        """The store no longer has the answer's keys (a restart, an eviction):
        write it all again."""
        written = self._answers.get(answer_id)
        if written is not None:
            written.stored = 0
            written.rewrite = True
            written.pending.set()

    async def read(
        self, answer_id: str, after: int, wait_seconds: float
    ) -> list[AnswerEvent] | None:
        """Events with seq > `after` (waiting up to `wait_seconds` for one), or
        None when this process does not hold the answer: ask the store."""
        if answer_id in self._given_up:
            raise StoreUnavailableError
        written = self._answers.get(answer_id)
        if written is None:
            return None
        return await written.after(after, wait_seconds)

    async def aclose(self) -> None:
        """The store closes: writers still waiting on it stop."""
        writers = list(self._writers.values())
        for writer in writers:
            writer.cancel()
        await asyncio.gather(*writers, return_exceptions=True)

    async def _write(self, answer_id: str) -> None:
        written = self._answers[answer_id]
        try:
            while not written.settled.is_set():
                await written.pending.wait()
                await pause(written.hurry, self._batch_seconds(written))
                if not (written.events and is_terminal(written.events[-1])):
                    written.hurry.clear()
                written.pending.clear()
                await self._write_pending(answer_id, written)
        except asyncio.CancelledError:
            written.failed = True  # the store closed first: its log cannot be finished
            raise
        # Never silently: a writer that died would let its answer's end count as stored.
        except Exception as exc:  # noqa: BLE001
            log.warning("an answer's writer failed (%s)", type(exc).__name__)
            written.failed = True
        finally:
            written.settled.set()
            self._writers.pop(answer_id, None)
            self._let_go(answer_id, written)

    async def _write_pending(self, answer_id: str, written: WrittenLog) -> None:
        """Send everything the store does not hold yet, riding out an outage."""
        outage = Outage(self._timing.outage_seconds)
        while written.stored < len(written.events):
            batch = written.events[written.stored :]
            try:
                reply = await self._send(answer_id, written.fingerprint, batch, written.rewrite)
            except StoreUnavailableError:
                if not await outage.wait_before_retry():
                    log.warning("the store stayed unavailable: the answer's log is given up")
                    written.failed = True
                    written.settled.set()
                    return
                written.rewrite = True  # it may have come back empty, or failed over
                continue
            outage.over()
            if _own_end(reply, written):
                # Its own last batch, stored by a try whose reply was lost.
                reply = BatchReply(BatchOutcome.STORED, reply.next_seq)
            if reply.outcome is BatchOutcome.ENDED or reply.next_seq > len(written.events):
                written.ended_elsewhere = True
                written.settled.set()
                return
            if reply.outcome is BatchOutcome.STORED:
                written.rewrite = False
            elif reply.next_seq < written.stored:
                written.rewrite = True  # lost: its own keys may be gone too
            # Stored: up to its end. Not at its end: the store holds less (a failover
            # lost the newest batches) or more (a reply lost on the way): from there.
            written.stored = reply.next_seq
        if written.events and is_terminal(written.events[-1]):
            written.settled.set()

    def _let_go(self, answer_id: str, written: WrittenLog) -> None:
        if self._answers.get(answer_id) is not written:
            return
        del self._answers[answer_id]
        if written.failed:
            self._given_up.add(answer_id)
        written.wake()  # readers waiting here read the feed, or the store, from now on
        # Only a log the store holds as written here is handed over: one ended
        # elsewhere differs from it after the end the other writer put in.
        if not written.failed and not written.ended_elsewhere:
            self._on_let_go(answer_id, written.events)


def _own_end(reply: BatchReply, written: WrittenLog) -> bool:
    """The store's log ends exactly where, and as, this process's does."""
    return (
        reply.outcome is BatchOutcome.ENDED
        and reply.next_seq == len(written.events)
        and bool(written.events)
        and is_terminal(written.events[-1])
    )
