"""Whether a new answer may start, and giving back what it took when it ends.

In order, cheapest first, so a flood is refused before it costs anything:
this process's cap (503 over_capacity), then the client's answers in
progress (429 too_many_streams), then its request rate and token budget
(429 rate_limited, budget_exhausted). All of it before any upstream call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from limits.aio.storage import Storage

from qa_service.access.adaptive_limit import AdaptiveLimit, LoopLagProbe
from qa_service.access.capacity import StreamCapacity
from qa_service.access.descriptors import open_file_limit, streams_within
from qa_service.access.quotas import ClientQuotas
from qa_service.access.slots import SLOT_LEASE_SECONDS, SlotKeeper, SlotStore
from qa_service.answers.run import AnswerRun
from qa_service.config import Settings
from qa_service.core import errors
from qa_service.core.errors import PublicError, QAServiceError

log = logging.getLogger(__name__)

# How long a client over QA_CLIENT_MAX_STREAMS is asked to wait: answers end
# at no time anyone can know, and a second is a polite poll.
STREAMS_RETRY_SECONDS = 1


@dataclass(slots=True)
class Admitted:
    """What one admitted answer holds until it ends."""

    client: str
    slot: str | None
    # The x-ratelimit-* headers for its response.
    headers: dict[str, str] = field(default_factory=dict)


class Admission:
    def __init__(
        self,
        capacity: StreamCapacity,
        quotas: ClientQuotas,
        slots: SlotKeeper,
        client_max_streams: int | None,
    ) -> None:
        self.capacity = capacity
        self.quotas = quotas
        self.slots = slots
        self._client_max_streams = client_max_streams
        self._releases: set[asyncio.Task[None]] = set()

    async def admit(self, client: str) -> Admitted:
        """Take a place for one answer of `client`, or raise the refusal."""
        if not self.capacity.try_take():
            raise QAServiceError(errors.OVER_CAPACITY)
        admitted = Admitted(client, None)
        try:
            await self._check_client(admitted)
        except BaseException:
            await self._give_back(admitted, 0)
            raise
        return admitted

    async def _check_client(self, admitted: Admitted) -> None:
        client = admitted.client
        # The client's answers in progress first: a client that polls as
        # too_many_streams' Retry-After says must not spend its request rate
        # waiting. A slot taken here is given back if a later check refuses.
        if self._client_max_streams is not None:
            slot = secrets.token_urlsafe(12)
            if not await self.slots.take(client, slot, self._client_max_streams):
                self._refuse(errors.TOO_MANY_STREAMS, admitted, STREAMS_RETRY_SECONDS)
            admitted.slot = slot
        # Concurrently: their Redis round trips overlap. A request over its
        # budget is counted against its rate either way, as when they ran in turn.
        (allowed, requests), tokens = await asyncio.gather(
            self.quotas.take_request(client), self.quotas.tokens_left(client)
        )
        if requests is not None:
            admitted.headers.update(requests.headers("requests"))
        if tokens is not None:
            admitted.headers.update(tokens.headers("tokens"))
        if requests is not None and not allowed:
            self._refuse(errors.RATE_LIMITED, admitted, requests.reset_seconds)
        if tokens is not None and tokens.spent:
            self._refuse(errors.BUDGET_EXHAUSTED, admitted, tokens.reset_seconds)

    @staticmethod
    def _refuse(public: PublicError, admitted: Admitted, wait_seconds: float) -> None:
        wait = float(max(1, math.ceil(wait_seconds)))
        raise QAServiceError(
            dataclasses.replace(public, retry_after_seconds=wait), admitted.headers
        )

    def release_when_ended(self, admitted: Admitted, run: AnswerRun) -> None:
        """Give back the answer's places, and charge its tokens, however it ends."""
        run.start().add_done_callback(lambda _: self._give_back_later(admitted, run.billed_tokens))

    async def give_back(self, admitted: Admitted) -> None:
        """For an answer that never started."""
        await self._give_back(admitted, 0)

    def _give_back_later(self, admitted: Admitted, tokens: int) -> None:
        task = asyncio.get_running_loop().create_task(self._give_back(admitted, tokens))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _give_back(self, admitted: Admitted, tokens: int) -> None:
        # Shielded: this runs when a request's task may itself be cancelled.
        # The charge lands before any place is given back: a client waiting
        # for its slot (or for the process's capacity) would otherwise start
        # its next answer in the round trip between the two, its budget not
        # yet showing this answer's tokens (issue 20).
        # Each place goes back even when the step before it failed, however:
        # a place not given back is held for the process's life.
        with anyio.CancelScope(shield=True):
            try:
                await self._charge(admitted.client, tokens)
            finally:
                try:
                    await self._give_back_slot(admitted)
                finally:
                    self.capacity.give_back()

    async def charge(self, client: str, tokens: int) -> None:
        """Charge `client` `tokens` of its budget (the answer cache's provider calls)."""
        await self._charge(client, tokens)

    async def _charge(self, client: str, tokens: int) -> None:
        try:
            await self.quotas.charge_tokens(client, tokens)
        except errors.StoreUnavailableError:
            log.warning("could not charge an answer's tokens to its client")

    async def _give_back_slot(self, admitted: Admitted) -> None:
        if admitted.slot is None:
            return
        try:
            await self.slots.give_back(admitted.client, admitted.slot)
        except errors.StoreUnavailableError:
            log.warning("could not give back a client's slot; its lease will lapse")

    async def drain(self) -> None:
        """At shutdown: wait (bounded) until every ended answer has given its places back."""
        if self._releases:
            with anyio.move_on_after(3):
                await asyncio.wait(set(self._releases))


@asynccontextmanager
async def open_admission(
    settings: Settings, counters: Storage, slot_store: SlotStore
) -> AsyncIterator[Admission]:
    """QA_MAX_STREAMS and the per-client limits, on the counters and slots given;
    the slots' leases are renewed while the block runs."""
    slots = SlotKeeper(slot_store, SLOT_LEASE_SECONDS)
    keeper = asyncio.get_running_loop().create_task(slots.keep_leases())
    capacity = build_capacity(settings)
    # Always on (a timer callback 40 times a second): the lag is exported
    # whether or not it moves the limit.
    lag = capacity.loop_lag
    probe = LoopLagProbe(lambda sample: lag.observe(sample, capacity.in_use))
    probe.start()
    try:
        yield Admission(
            capacity,
            ClientQuotas(counters, settings.rate_limit, settings.client_token_budget),
            slots,
            settings.client_max_streams,
        )
    finally:
        probe.stop()
        keeper.cancel()


def build_capacity(settings: Settings) -> StreamCapacity:
    """QA_MAX_STREAMS (or the provider pool's bound, when lower), under it what the
    open-file limit allows, and the adaptive limit."""
    descriptors_allow = streams_within(
        open_file_limit(),
        redis=settings.redis_url is not None,
        idle_connections=settings.upstream_max_idle_connections,
    )
    hard_ceiling = min(settings.max_streams, settings.upstream_max_connections)
    ceiling = hard_ceiling if descriptors_allow is None else min(hard_ceiling, descriptors_allow)
    adaptive = None
    if settings.adaptive_limit:
        adaptive = AdaptiveLimit(
            ceiling, settings.adaptive_limit_min, settings.adaptive_limit_lag_ms / 1000
        )
    return StreamCapacity(hard_ceiling, descriptors_allow, adaptive)
