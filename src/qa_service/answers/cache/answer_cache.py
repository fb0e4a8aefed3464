"""Hit, join, miss or bypass: how the cache starts an answer, and what each leaves behind.

Every client's answer is an answer of its own (its id, log, cancel and resume
work as without the cache). With the cache on, a miss starts two:
- the shared answer: the provider call, in a log whose id no client is given
  (meta `cache`: `source`), recorded as it goes;
- the client's answer, which reads the shared one's log (sources.RelaySource).

A question asked while the shared answer is written joins it: one more
answer reading the same log. So the first asker is no different from the
joiners: cancelling or leaving ends only its own answer. The shared answer is
cancelled when its last reader has gone (each leaves after its own resume
grace, as a lone answer is), counted in the flight (ports.py). When it ends
with finish_reason `stop` its recording is kept for QA_ANSWER_CACHE_TTL_SECONDS,
and a later question replays it (a hit). Anything else is never kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import anyio

from qa_service.answers.cache.keys import GLOBAL_SCOPE, ModelShape, cache_key
from qa_service.answers.cache.ports import CacheStore
from qa_service.answers.cache.recording import RecordedAnswer, RecordingSource
from qa_service.answers.cache.sources import RelaySource, ReplaySource
from qa_service.answers.model import AnswerRequest, new_answer_id
from qa_service.answers.registry import AnswerRegistry
from qa_service.answers.run import AnswerRun
from qa_service.core.errors import CANCELLED, QAServiceError, StoreUnavailableError
from qa_service.core.events import AnswerMeta, CacheOutcome, Done

log = logging.getLogger(__name__)

# How long the cache's own bookkeeping may take at shutdown, after the answers end.
_CLOSE_SECONDS = 3.0
# How long a joiner waits for a flight's answer's log to be created (one round
# trip after the claim, a slow one on a busy replica), polling this often.
_LOG_CREATED_WITHIN = 2.0
_LOG_CREATED_POLL = 0.02


@dataclass(frozen=True, slots=True)
class CachePolicy:
    # How long a finished answer is kept (QA_ANSWER_CACHE_TTL_SECONDS).
    ttl_seconds: int
    # QA_ANSWER_CACHE_SCOPE=global: every client shares; else each client its own.
    global_scope: bool = False
    # QA_ANSWER_CACHE_REPLAY=original: a hit keeps the original's pace (capped).
    paced_replay: bool = False
    # Readers of one shared answer (QA_ANSWER_CACHE_MAX_JOINERS); past it, another starts.
    max_readers: int = 100
    # An answer being written is joinable this long from its start, at most.
    flight_seconds: int = 300


@dataclass(frozen=True, slots=True)
class CacheControls:
    """The request's Cache-Control."""

    no_cache: bool = False  # ask afresh, and keep the result
    no_store: bool = False  # ask afresh, and keep nothing


# Charges a client's token budget (QA_CLIENT_TOKEN_BUDGET): (client, tokens).
Charge = Callable[[str, int], Awaitable[None]]


class AnswerCache:
    def __init__(
        self,
        registry: AnswerRegistry,
        store: CacheStore,
        policy: CachePolicy,
        shape: ModelShape,
        charge: Charge | None = None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._policy = policy
        self._shape = shape
        # A provider call is charged whole to the client that started it, when
        # it ends: not by the answers that read it, which a client could leave
        # early (a miss cancelled once its own join had attached read the rest free).
        self._charge = charge
        # Each answer's bookkeeping after it ends (keep its recording, leave its flight).
        self._pending: set[asyncio.Task[None]] = set()

    async def start(
        self,
        request: AnswerRequest,
        meta: AnswerMeta,
        client: str,
        controls: CacheControls = CacheControls(),
        reader_within: float = 0.0,
    ) -> AnswerRun:
        """The client's answer to `request`; its meta's `cache` says which way it came."""
        registry = self._registry
        policy = self._policy
        key = cache_key(request, GLOBAL_SCOPE if policy.global_scope else client, self._shape)
        if controls.no_store:
            # A provider call of its own, read as a miss's is (so the provider's
            # metrics count it once, as `source`), joinable by nobody, kept nowhere.
            return await self._ask(
                request, meta, CacheOutcome.BYPASS, reader_within, key, None, client, keep=False
            )
        if not controls.no_cache:
            found = await self._store.get(key)
            recording = RecordedAnswer.decode(found) if found is not None else None
            if recording is not None:
                hit = dataclasses.replace(meta, cache=CacheOutcome.HIT)
                replay = ReplaySource(recording, paced=policy.paced_replay)
                return await registry.start(request, hit, reader_within, source=replay)
        outcome = CacheOutcome.BYPASS if controls.no_cache else CacheOutcome.MISS
        # No-cache asks afresh: it never joins, but its answer may be joined.
        max_readers = 0 if controls.no_cache else policy.max_readers
        for _ in range(2):
            flight = await self._store.join_or_start(
                key, new_answer_id(), max_readers, policy.flight_seconds
            )
            if flight is None:
                break  # the flight is full: an answer of its own, kept but not joinable
            shared_id, started = flight
            if started:
                return await self._ask(
                    request, meta, outcome, reader_within, key, shared_id, client
                )
            try:
                joinable = await self._joinable(shared_id)
            except BaseException:
                # Counted in the flight, and never to read it: leave it again.
                self._later(functools.partial(self._reader_left, key, shared_id, True))
                raise
            if joinable:
                joined = dataclasses.replace(meta, cache=CacheOutcome.JOIN)
                return await self._read(request, joined, reader_within, key, shared_id, True)
            # Its writer died, or it failed: that flight is over.
            await self._store.leave(key, shared_id)
            await self._store.end(key, shared_id)
        return await self._ask(request, meta, outcome, reader_within, key, None, client)

    async def _ask(
        self,
        request: AnswerRequest,
        meta: AnswerMeta,
        outcome: CacheOutcome,
        reader_within: float,
        key: str,
        flight_id: str | None,
        payer: str,
        keep: bool = True,
    ) -> AnswerRun:
        """A new shared answer (the flight's, when `flight_id`), and the client's reading it.

        `payer`: the client charged its tokens. `keep`: its recording is kept
        when it finishes normally (not with no-store).
        """
        registry = self._registry
        recorder = RecordingSource(registry.model_source(request))
        source_meta = dataclasses.replace(meta, cache=CacheOutcome.SOURCE)
        try:
            shared = await registry.start(
                request, source_meta, source=recorder, answer_id=flight_id or new_answer_id()
            )
        except BaseException:
            if flight_id is not None:
                self._later(lambda: self._store.end(key, flight_id))
            raise
        in_flight = flight_id is not None
        self._when_ended(
            shared, lambda: self._shared_ended(key, shared, recorder, in_flight, payer, keep)
        )
        client_meta = dataclasses.replace(meta, cache=outcome)
        return await self._read(request, client_meta, reader_within, key, shared.id, in_flight)

    async def _read(
        self,
        request: AnswerRequest,
        meta: AnswerMeta,
        reader_within: float,
        key: str,
        shared_id: str,
        in_flight: bool,
    ) -> AnswerRun:
        """The client's answer: the shared one's text, in an answer of its own."""
        registry = self._registry
        try:
            run = await registry.start(
                request, meta, reader_within, source=RelaySource(registry, shared_id)
            )
        except BaseException:
            self._later(lambda: self._reader_left(key, shared_id, in_flight))
            raise
        self._when_ended(run, lambda: self._reader_left(key, shared_id, in_flight))
        return run

    async def _joinable(self, shared_id: str) -> bool:
        """Whether a flight's answer has a writer, or has ended normally (its log
        then has it all). One that failed is not: its flight may outlive it a
        moment (or, with the store down, until it expires), and a new question
        must not get an old error.

        A flight is claimed a round trip before its answer's log is created (the
        claim names the answer): a log not there yet is waited for, up to
        _LOG_CREATED_WITHIN. Taking it for a dead writer's made a burst on Redis
        start a second provider call now and then (benchmarks/answer_cache.py).
        """
        registry = self._registry
        if registry.generating(shared_id):
            return True
        clock = asyncio.get_running_loop()
        deadline = clock.time() + _LOG_CREATED_WITHIN
        while (info := await registry.store.describe(shared_id)) is None:
            if clock.time() >= deadline:
                return False  # its replica died between the claim and the log
            await asyncio.sleep(_LOG_CREATED_POLL)
        if info.final_seq is None:
            return await registry.store.producer_alive(shared_id)
        return isinstance(await registry.last_event(shared_id, info), Done)

    async def _shared_ended(
        self,
        key: str,
        shared: AnswerRun,
        recorder: RecordingSource,
        in_flight: bool,
        payer: str,
        keep: bool,
    ) -> None:
        """Keep the answer if it finished normally, as the key's provider and model
        wrote it; charge the provider call to its payer; then its flight is over.
        Kept before charged: a client that sees its charge finds the answer kept."""
        try:
            summary = shared.summary
            finished = summary is not None and summary.finish_reason == "stop"
            # A fallback's answer is not the key's model's: the primary is asked
            # again next time, not replaced for a whole TTL by its stand-in.
            if keep and finished and summary is not None and not shared.by_fallback:
                try:
                    recording = recorder.recorded(summary).encode()
                    await self._store.put(key, recording, self._policy.ttl_seconds)
                except StoreUnavailableError:
                    log.warning("could not keep a finished answer in the cache")
            if self._charge is not None:
                await self._charge(payer, shared.stats.billed_tokens)
        finally:
            if in_flight:
                with suppress(StoreUnavailableError):
                    await self._store.end(key, shared.id)

    async def _reader_left(self, key: str, shared_id: str, in_flight: bool) -> None:
        """A client's answer ended: when it was the shared answer's last reader
        and that is still being written, nobody is left to pay it for."""
        registry = self._registry
        if in_flight:
            try:
                left = await self._store.leave(key, shared_id)
            except StoreUnavailableError:
                return  # the shared answer's own resume grace stops it
            if left != 0:
                return
        run = registry.local(shared_id)
        if run is not None and run.ended:
            return
        with suppress(QAServiceError):  # already forgotten, or the store is down
            await registry.cancel(shared_id, CANCELLED, "client_disconnected")

    def _when_ended(
        self, run: AnswerRun, bookkeeping: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        run.start().add_done_callback(lambda _: self._later(bookkeeping))

    def _later(self, bookkeeping: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.get_running_loop().create_task(bookkeeping())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        """At shutdown, once the answers have ended: their bookkeeping gets its time."""
        if self._pending:
            with anyio.move_on_after(_CLOSE_SECONDS, shield=True):
                await asyncio.wait(set(self._pending))
