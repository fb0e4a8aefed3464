"""What an answer needs from the outside, as Protocols: the log store and its writer.

The store has two backends (stores/memory_answers.py, in this process; stores/redis_answers.py,
shared by every replica). Both keep the same promises:

- An answer's log holds its domain events in seq order: `Meta` (seq 0), then
  `Text`s, then exactly one `Done` or `Failed`. `append` is a compare-and-set
  on the next free seq, and refuses anything after the last event: when a
  reader declares the producer lost, the producer's next append fails, and it
  stops (answers/run.py).
- A log outlives its connections: it is kept QA_RESUME_TTL_SECONDS after its
  last event, then forgotten (`describe` gives None).
- Signals between replicas: the producer's lease (it is alive), readers'
  presence (someone still listens), and cancel requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from qa_service.core.events import AnswerEvent
from qa_service.core.loops import Loop


@dataclass(frozen=True, slots=True)
class LogInfo:
    """What a store knows about an answer without reading its events."""

    fingerprint: str
    last_seq: int  # the seq of its newest event; -1 before its first
    final_seq: int | None  # the seq of its Done or Failed, once it has ended


class AnswerStore(Protocol):
    async def create(
        self,
        answer_id: str,
        fingerprint: str,
        lease_seconds: float = 0.0,
        reader_seconds: float = 0.0,
    ) -> None:
        """Start an empty log for a new answer, bound to its request's fingerprint;
        in the same step, when given, its producer's lease for `lease_seconds` and
        a reader's presence for `reader_seconds` (a new answer's first reader may
        attach only once its response stops being held)."""

    async def describe(self, answer_id: str) -> LogInfo | None:
        """None when the answer is unknown here, or has expired."""

    async def describe_for_producer(self, answer_id: str) -> LogInfo | None:
        """`describe`, for the answer's producer: it never waits behind readers
        (with Redis, it goes through the producers' connections)."""

    async def append(self, answer_id: str, event: AnswerEvent) -> bool:
        """Add `event` if its seq is the next one; False if that seq is taken
        or the log has already ended.

        Raises StoreUnavailableError when the store cannot be reached, or has
        lost the log (a Redis restart without persistence).
        """

    async def read(self, answer_id: str, after: int, wait_seconds: float) -> list[AnswerEvent]:
        """The events with seq > `after`, in order; waits up to `wait_seconds`
        for the first of them, and gives [] if none came."""

    def start_following(self, answer_id: str) -> Loop | None:
        """Read `answer_id` once for every reader in this process, from now until
        the caller stops the loop (when its last local reader leaves); `read`
        then serves them all from that. None: reads cost nothing to share."""

    async def renew_lease(self, answer_id: str, seconds: float) -> None:
        """The producer is alive for `seconds` more."""

    async def release_lease(self, answer_id: str) -> None:
        """The producer is done with the answer (its last event is in the log)."""

    async def producer_alive(self, answer_id: str) -> bool: ...

    async def touch_reader(self, answer_id: str, seconds: float) -> None:
        """A reader is attached, for `seconds` from now: a later touch replaces an
        earlier one, even a longer one (the first, which covers a held response)."""

    async def reader_present(self, answer_id: str) -> bool: ...

    def attach_reader(self, answer_id: str) -> bool:
        """This process has a reader of `answer_id` from now until `detach_reader`.
        True: the store keeps that as state (its answers live in this process),
        and no loop need `touch_reader`; False: the caller keeps the reader
        present with `touch_reader` (answers/readers.py)."""

    def detach_reader(self, answer_id: str, seconds: float) -> None:
        """This process's last reader of `answer_id` has gone: present for
        `seconds` more, counted from now (the resume grace starts at the leave,
        not at the reader's last touch)."""

    async def request_cancel(self, answer_id: str) -> None:
        """Ask whichever replica generates `answer_id` to stop it."""

    def cancel_requests(self) -> AsyncIterator[str]:
        """Answer ids whose cancel was requested, from any replica, as they come."""
