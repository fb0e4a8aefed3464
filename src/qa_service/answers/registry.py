"""The answers this process generates, by id; starting, resuming and cancelling them.

Resuming and cancelling work from any replica: a resume reads the shared log,
and a cancel for an answer generated elsewhere goes through the store to the
replica that runs it (see `listen`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum

from qa_service.answers.model import AnswerObserver, AnswerRequest, new_answer_id
from qa_service.answers.ports import AnswerStore, LogInfo
from qa_service.answers.readers import NO_READER_LIMITS, LocalReaders, ReaderLimits
from qa_service.answers.run import AnswerRun, RunTiming, TextSource, WriterSource
from qa_service.core import errors
from qa_service.core.errors import (
    CANCELLED,
    PRODUCER_LOST,
    PublicError,
    QAServiceError,
    StoreUnavailableError,
)
from qa_service.core.events import AnswerEvent, AnswerMeta, Failed, is_terminal
from qa_service.generation.writer import AIWriter

log = logging.getLogger(__name__)

# How long a resume waits for a shared store to hold the event it continues
# after: a batch is written within QA_REDIS_UNWATCHED_BATCH_MS (2 s at most),
# so this is that with room for a busy replica. Past it, the id is one this
# answer never sent (or its producer died before writing it).
_CATCH_UP_SECONDS = 3.0
_CATCH_UP_POLL_SECONDS = 0.05
# The presence a resume catching up announces, before its reader's own.
_PRESENCE_WHILE_CATCHING_UP = 5.0


class CancelResult(Enum):
    CANCELLED = "cancelled"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class ResumePoint:
    answer_id: str
    after: int
    # Events already in the log that the reader will be sent again.
    replayed: int
    # The answer has ended and the reader had its last event.
    delivered_all: bool


class AnswerRegistry:
    def __init__(
        self,
        store: AnswerStore,
        writer: AIWriter,
        timing: RunTiming,
        observers: Sequence[AnswerObserver] = (),
        reader_limits: ReaderLimits = NO_READER_LIMITS,
    ) -> None:
        self.store = store
        self.timing = timing
        # Every connection that reads an answer here, whichever replica writes it.
        self.readers = LocalReaders(store, timing.grace_seconds, reader_limits)
        self._writer = writer
        self._observers = observers
        self._runs: dict[str, AnswerRun] = {}
        # Each answer's ending (its last event, its lease's release): it can
        # outlive the answer's task, and must end before the stores close.
        self._endings: set[asyncio.Task[None]] = set()

    def model_source(self, request: AnswerRequest) -> WriterSource:
        """`request`'s text as the model writes it: a new answer's source by default."""
        return WriterSource(self._writer, request)

    def local(self, answer_id: str) -> AnswerRun | None:
        return self._runs.get(answer_id)

    def generating(self, answer_id: str) -> bool:
        """This process is generating the answer now (its producer is alive)."""
        run = self._runs.get(answer_id)
        return run is not None and not run.ended

    def count_generating(self) -> int:
        """How many answers this process is generating now (a drain waits for them)."""
        return sum(not run.ended for run in self._runs.values())

    async def start(
        self,
        request: AnswerRequest,
        meta: AnswerMeta,
        reader_within: float = 0.0,
        source: TextSource | None = None,
        answer_id: str | None = None,
    ) -> AnswerRun:
        """A new answer, generating in this process: with a fresh id unless
        `answer_id` is given (one made by new_answer_id, never a client's).

        `reader_within`: how long its first reader may take to attach (a
        response held for the first text) before the resume grace starts.
        `source`: where its text comes from; the model by default.
        """
        answer_id = answer_id or new_answer_id()
        meta = dataclasses.replace(meta, answer_id=answer_id)
        grace = self.timing.grace_seconds
        # One step (one Redis round trip), before the task runs: a reader must
        # never see an answer with no lease. A burst of starts on a busy process
        # made three steps, each waiting its turn in the event loop, miss the
        # store's deadline (503 store_unavailable with Redis answering in ms).
        await self.store.create(
            answer_id,
            request.fingerprint(),
            lease_seconds=self.timing.lease_seconds,
            reader_seconds=grace + reader_within if grace > 0 else 0.0,
        )
        run = AnswerRun(
            meta,
            source or self.model_source(request),
            self.store,
            self.timing,
            self._observers,
            on_ending=self._track_ending,
        )
        self._runs[answer_id] = run
        run.start().add_done_callback(lambda _: self._runs.pop(answer_id, None))
        return run

    async def resume_point(
        self, answer_id: str, after: int, request: AnswerRequest | None
    ) -> ResumePoint:
        """Where a reader continues; refuses an unknown answer, or another request's."""
        info = await self.caught_up(answer_id, after)
        if info is None:
            raise QAServiceError(errors.ANSWER_NOT_FOUND)
        if request is not None and request.fingerprint() != info.fingerprint:
            raise QAServiceError(errors.RESUME_MISMATCH)
        if after > info.last_seq and not await self._may_be_ahead(answer_id, info):
            # Not an event this answer has sent: its producer wrote its end.
            raise QAServiceError(errors.INVALID_LAST_EVENT_ID)
        delivered_all = info.final_seq is not None and after == info.final_seq
        return ResumePoint(answer_id, after, max(0, info.last_seq - after), delivered_all)

    async def caught_up(self, answer_id: str, after: int) -> LogInfo | None:
        """The answer's log, once it holds `after` (waiting a little for that):
        a shared store gets the writer's events in batches, so a client that
        read them from the writer's memory may resume elsewhere a batch ahead."""
        clock = asyncio.get_running_loop()
        deadline = clock.time() + _CATCH_UP_SECONDS
        told = False
        while True:
            info = await self.store.describe(answer_id)
            if info is None or info.final_seq is not None or info.last_seq >= after:
                return info
            if not told:
                # A reader elsewhere: its producer writes short batches from its
                # next heartbeat on, not the long ones nobody elsewhere waits for.
                told = True
                with suppress(StoreUnavailableError):
                    await self.store.touch_reader(answer_id, _PRESENCE_WHILE_CATCHING_UP)
            if clock.time() >= deadline:
                return info
            await asyncio.sleep(_CATCH_UP_POLL_SECONDS)

    async def _may_be_ahead(self, answer_id: str, info: LogInfo) -> bool:
        """Whether a client may hold events the store's log does not: it read
        them from the producer's memory, and the producer is still writing
        them (on a busy replica, later than the catch-up waits: the reader then
        waits for them), or died before it did (its resume ends with
        producer_lost: answers/follow.py). A log whose producer wrote its end
        holds everything it sent."""
        if info.final_seq is None:
            return True
        last = await self.last_event(answer_id, info)
        return isinstance(last, Failed) and last.error.code == PRODUCER_LOST.code

    async def log_through(self, answer_id: str, seq: int | None = None) -> list[AnswerEvent]:
        """The answer's log from its start: as far as it goes now (`seq` None),
        or through `seq`, waiting a little (as a resume does) for a shared
        store to hold it. A store gives a log in parts (Redis: a thousand
        batches a read), so this reads until it has them; a caller that needs
        `seq` checks it came (a store far behind gives fewer)."""
        clock = asyncio.get_running_loop()
        deadline = clock.time() + _CATCH_UP_SECONDS
        events: list[AnswerEvent] = []
        while not events or not is_terminal(events[-1]):
            after = events[-1].seq if events else -1
            waiting = seq is not None and after < seq and clock.time() < deadline
            if seq is not None and after >= seq:
                break
            batch = await self.store.read(
                answer_id, after, _CATCH_UP_POLL_SECONDS if waiting else 0
            )
            if not batch and not waiting:
                break
            events.extend(batch)
        return events

    async def last_event(self, answer_id: str, info: LogInfo) -> AnswerEvent | None:
        """An ended log's last event (its Done or Failed); None while it has not
        ended, or if the store no longer holds it."""
        if info.final_seq is None:
            return None
        last = await self.store.read(answer_id, info.final_seq - 1, 0)
        return last[-1] if last else None

    async def cancel(
        self, answer_id: str, public: PublicError = CANCELLED, outcome: str = "cancelled"
    ) -> CancelResult:
        """Stop an answer wherever it runs. Here: waits until its upstream is closed."""
        run = self._runs.get(answer_id)
        if run is not None and not run.ended:
            await run.cancel(public, outcome)
            return CancelResult.CANCELLED
        info = await self.store.describe(answer_id)
        if info is None:
            raise QAServiceError(errors.ANSWER_NOT_FOUND)
        if info.final_seq is not None:
            return CancelResult.FINISHED
        await self.store.request_cancel(answer_id)
        return CancelResult.CANCELLED

    async def listen(self) -> None:
        """Run for the app's life: cancel the answers here that another replica was asked to."""
        async for answer_id in self.store.cancel_requests():
            run = self._runs.get(answer_id)
            if run is not None:
                run.cancel_soon()

    def report_producer_lost(self) -> None:
        for observer in self._observers:
            observer.producer_lost()

    async def abort_all(self, public: PublicError) -> None:
        """At shutdown: end every answer still generating here with `public`."""
        runs = list(self._runs.values())
        if runs:
            log.info("ending %d answers at shutdown", len(runs))
        await asyncio.gather(*(run.cancel(public, "error") for run in runs))
        await self._wait_for_endings()
        # An answer whose ending was cancelled late still has its own
        # bookkeeping to finish (a step of the loop or two): no task is left
        # running when the stores close (seen pending on a loaded machine).
        still = [task for run in runs if (task := run.task) is not None and not task.done()]
        if still:
            await asyncio.wait(still, timeout=self.timing.close_seconds)

    def _track_ending(self, ending: asyncio.Task[None]) -> None:
        self._endings.add(ending)
        ending.add_done_callback(self._endings.discard)

    async def _wait_for_endings(self) -> None:
        """Before the stores close: an ending still storing its last event
        (its appends stop at a deadline, but one under way is not cut short)
        gets its time, and is cancelled past it, so none runs against a closed
        client or is destroyed pending."""
        endings = set(self._endings)
        if not endings:
            return
        _, late = await asyncio.wait(endings, timeout=self.timing.close_seconds * 2)
        if late:
            log.warning("cancelling %d answer endings at shutdown", len(late))
            for ending in late:
                ending.cancel()
            await asyncio.wait(late, timeout=self.timing.close_seconds)
