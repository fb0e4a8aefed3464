"""The in-process answer store: the default, with no dependency.

Any connection to this process can resume any answer this process generates;
another process cannot (QA_REDIS_URL shares answers between replicas).
Finished logs are forgotten `ttl_seconds` after their last event. They end in
the order they expire, so a deque keeps the sweep O(1) per answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from qa_service.answers.ports import LogInfo
from qa_service.core.events import AnswerEvent, is_terminal
from qa_service.core.loops import Loop
from qa_service.stores.growing import GrowingLog


@dataclass(slots=True)
class _Log(GrowingLog):
    fingerprint: str = ""
    lease_until: float = 0.0
    reader_until: float = 0.0


class MemoryAnswerStore:
    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._logs: dict[str, _Log] = {}
        self._expiries: deque[tuple[float, str]] = deque()
        self._cancels: asyncio.Queue[str] = asyncio.Queue()
        # Answers with a reader attached here now (answers/readers.py), their
        # log created yet or not (a cache join can attach first).
        self._attached: set[str] = set()

    async def create(
        self,
        answer_id: str,
        fingerprint: str,
        lease_seconds: float = 0.0,
        reader_seconds: float = 0.0,
    ) -> None:
        self._sweep()
        now = time.monotonic()
        self._logs[answer_id] = _Log(
            fingerprint=fingerprint,
            lease_until=now + lease_seconds if lease_seconds > 0 else 0.0,
            reader_until=now + reader_seconds if reader_seconds > 0 else 0.0,
        )

    async def describe(self, answer_id: str) -> LogInfo | None:
        self._sweep()
        log = self._logs.get(answer_id)
        if log is None:
            return None
        last = log.events[-1] if log.events else None
        final = last.seq if last is not None and is_terminal(last) else None
        return LogInfo(log.fingerprint, len(log.events) - 1, final)

    async def describe_for_producer(self, answer_id: str) -> LogInfo | None:
        return await self.describe(answer_id)  # no readers to wait behind here

    async def append(self, answer_id: str, event: AnswerEvent) -> bool:
        log = self._logs.get(answer_id)
        if log is None or event.seq != len(log.events):
            return False
        if log.events and is_terminal(log.events[-1]):
            return False  # ended: nothing goes after its last event
        log.add(event)
        if is_terminal(event):
            self._expiries.append((time.monotonic() + self._ttl, answer_id))
        return True

    async def read(self, answer_id: str, after: int, wait_seconds: float) -> list[AnswerEvent]:
        log = self._logs.get(answer_id)
        if log is None:
            return []
        return await log.after(after, wait_seconds)

    def start_following(self, answer_id: str) -> Loop | None:
        return None  # its readers wait on the log itself

    async def renew_lease(self, answer_id: str, seconds: float) -> None:
        if (log := self._logs.get(answer_id)) is not None:
            log.lease_until = time.monotonic() + seconds

    async def release_lease(self, answer_id: str) -> None:
        if (log := self._logs.get(answer_id)) is not None:
            log.lease_until = 0.0

    async def producer_alive(self, answer_id: str) -> bool:
        log = self._logs.get(answer_id)
        return log is not None and log.lease_until > time.monotonic()

    async def touch_reader(self, answer_id: str, seconds: float) -> None:
        if (log := self._logs.get(answer_id)) is not None:
            log.reader_until = time.monotonic() + seconds

    async def reader_present(self, answer_id: str) -> bool:
        log = self._logs.get(answer_id)
        return log is not None and (
            answer_id in self._attached or log.reader_until > time.monotonic()
        )

    def attach_reader(self, answer_id: str) -> bool:
        # Every reader is in this process: its presence is state here, with no
        # loop refreshing it (a task, an Event and a timer per open stream saved).
        self._attached.add(answer_id)
        return True

    def detach_reader(self, answer_id: str, seconds: float) -> None:
        self._attached.discard(answer_id)
        if (log := self._logs.get(answer_id)) is not None:
            log.reader_until = time.monotonic() + seconds

    async def request_cancel(self, answer_id: str) -> None:
        self._cancels.put_nowait(answer_id)

    async def cancel_requests(self) -> AsyncIterator[str]:
        while True:
            yield await self._cancels.get()

    def _sweep(self) -> None:
        now = time.monotonic()
        while self._expiries and self._expiries[0][0] <= now:
            _, answer_id = self._expiries.popleft()
            self._logs.pop(answer_id, None)
