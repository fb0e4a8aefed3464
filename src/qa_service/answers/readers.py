"""This process's readers of answers: how many, per answer and per client, and
what an answer needs while any of them reads it.

For each answer with a reader here there is one record, made by its first
reader and dropped when its last one leaves. It keeps the readers' presence in
the store (the producer's resume grace counts from when the last reader
anywhere left): one loop refreshing it on a store shared between processes,
none on the in-process store, which holds it as state (attach_reader); and the
store's one read of the answer for all of them (stores/followed.py). Readers
past the bounds are refused with 429 too_many_readers before their stream
starts: a resume needs no key, so without a bound anyone could hold a
replica's connections open (issue 20).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field

import anyio

from qa_service.answers.ports import AnswerStore
from qa_service.core.errors import TOO_MANY_READERS, QAServiceError, StoreUnavailableError
from qa_service.core.loops import Loop, pause

log = logging.getLogger(__name__)

# How long leaving waits for an answer's loops to end (they end at their next step).
_STOP_SECONDS = 5.0
# A reader's presence, in seconds, where no resume grace sets it.
_PRESENCE_WITHOUT_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    # Readers of one answer in this process at once (QA_MAX_READERS_PER_ANSWER);
    # 0: no bound.
    per_answer: int = 0
    # One client's resuming connections in this process at once, of any
    # answers (QA_CLIENT_MAX_READERS); 0: no bound.
    per_client: int = 0


NO_READER_LIMITS = ReaderLimits()


class TooManyReadersError(QAServiceError):
    def __init__(self) -> None:
        super().__init__(TOO_MANY_READERS)


@dataclass(slots=True)
class _Followed:
    readers: int = 0
    loops: list[Loop] = field(default_factory=list)


class LocalReaders:
    def __init__(
        self, store: AnswerStore, presence_seconds: float, limits: ReaderLimits = NO_READER_LIMITS
    ) -> None:
        self._store = store
        # With no resume grace, presence still tells an answer's producer on
        # another instance that a reader follows it there (stores/write_behind.py
        # then writes it in short batches).
        self._presence = presence_seconds if presence_seconds > 0 else _PRESENCE_WITHOUT_GRACE
        self._limits = limits
        self._answers: dict[str, _Followed] = {}
        self._clients: Counter[str] = Counter()

    def admit(self, answer_id: str, client: str | None = None) -> ReaderPlace:
        """A place for a reader of `answer_id`; its caller must `leave()` it.

        `client` (a resume): counted against the bounds, and refused past them.
        None: the connection that started the answer, counted but never refused
        (the client's answers are bounded when they start).
        """
        followed = self._answers.get(answer_id)
        if client is not None:
            limits = self._limits
            if limits.per_answer and followed and followed.readers >= limits.per_answer:
                raise TooManyReadersError
            if limits.per_client and self._clients[client] >= limits.per_client:
                raise TooManyReadersError
            self._clients[client] += 1
        if followed is None:
            followed = self._answers[answer_id] = _Followed(loops=self._start(answer_id))
        followed.readers += 1
        return ReaderPlace(self, answer_id, client)

    @property
    def answers(self) -> int:
        """How many answers this process's readers read now."""
        return len(self._answers)

    def _start(self, answer_id: str) -> list[Loop]:
        loops = []
        if (feed := self._store.start_following(answer_id)) is not None:
            loops.append(feed)
        if not self._store.attach_reader(answer_id):
            loops.append(Loop(lambda stop: self._keep_present(answer_id, stop), "reader-presence"))
        return loops

    def count_out(self, answer_id: str, client: str | None) -> list[Loop]:
        """Counts a reader out (its place calls this once); the loops to stop
        when it was the answer's last."""
        if client is not None and client in self._clients:
            self._clients[client] -= 1
            if self._clients[client] <= 0:
                del self._clients[client]
        followed = self._answers.get(answer_id)
        if followed is None:
            return []  # closed (the app's end) while this reader was attached
        followed.readers -= 1
        if followed.readers > 0:
            return []
        del self._answers[answer_id]
        self._store.detach_reader(answer_id, self._presence)
        return followed.loops

    async def _keep_present(self, answer_id: str, stop: asyncio.Event) -> None:
        # A quarter of the grace, at most 1 s: presence never lapses while a
        # reader is attached, and it costs Redis little.
        refresh = min(1.0, self._presence / 4)
        while not stop.is_set():
            with suppress(StoreUnavailableError):  # the reads report an unusable store
                await self._store.touch_reader(answer_id, self._presence)
            if await pause(stop, refresh):
                return

    async def close(self) -> None:
        """Stop every answer's loops (the app's end)."""
        loops = [loop for followed in self._answers.values() for loop in followed.loops]
        # As each reader's own leaving would: the store's attached set, too.
        for answer_id in self._answers:
            self._store.detach_reader(answer_id, self._presence)
        self._answers.clear()
        self._clients.clear()
        await stop_loops(loops)


async def stop_loops(loops: list[Loop]) -> None:
    """Ask every loop to stop at once, then wait for them all under one deadline
    (one by one, a shutdown with many answers took up to 5 s each)."""
    for loop in loops:
        loop.ask_to_stop()
    # Shielded, as each Loop.stop is: callers run in a cancelled task's cleanup,
    # and a cancel there must not leave the loops unawaited.
    with anyio.CancelScope(shield=True):
        await asyncio.gather(*(loop.stop(_STOP_SECONDS) for loop in loops))


class ReaderPlace:
    """One reader's place; leaving twice is harmless."""

    def __init__(self, readers: LocalReaders, answer_id: str, client: str | None) -> None:
        self._readers = readers
        self._answer_id = answer_id
        self._client = client
        self._left = False

    def _take_leave(self) -> list[Loop]:
        if self._left:
            return []
        self._left = True
        return self._readers.count_out(self._answer_id, self._client)

    def drop(self) -> None:
        """Leave without waiting (a finalizer): the loops end at their next step."""
        for loop in self._take_leave():
            loop.ask_to_stop()

    async def leave(self) -> None:
        """Leave, and when this was the answer's last reader here, stop its loops
        and wait until they have ended."""
        await stop_loops(self._take_leave())
