"""QA_CLIENT_MAX_STREAMS: a client's answers in progress, counted across replicas.

The `limits` library counts events in time windows; it has no notion of
"at once". So a client's answers in progress are slots: one per answer, taken
before it starts and given back however it ends (done, error, hang-up, cancel,
shutdown, timeout: the answer's task ending is the one place all of those
meet). In Redis each slot carries a lease, renewed by the replica that holds
it, so a replica that dies gives its clients' slots back within a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Protocol

from qa_service.core.errors import StoreUnavailableError

log = logging.getLogger(__name__)

# A replica that stops renewing its clients' slots (it died) frees them this long after.
SLOT_LEASE_SECONDS = 30.0


class SlotStore(Protocol):
    async def take(self, client: str, slot: str, limit: int, lease_seconds: float) -> bool:
        """Take `slot` for `client` if it holds fewer than `limit` live slots."""

    async def renew(self, held: Mapping[str, set[str]], lease_seconds: float) -> None:
        """Extend the lease of every slot in `held` (client -> slots)."""

    async def give_back(self, client: str, slot: str) -> None: ...


class SlotKeeper:
    """The slots this process holds, and the one task that keeps their leases."""

    def __init__(self, store: SlotStore, lease_seconds: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self._held: defaultdict[str, set[str]] = defaultdict(set)

    @property
    def held(self) -> int:
        return sum(len(slots) for slots in self._held.values())

    async def take(self, client: str, slot: str, limit: int) -> bool:
        if not await self.store.take(client, slot, limit, self.lease_seconds):
            return False
        self._held[client].add(slot)
        return True

    async def give_back(self, client: str, slot: str) -> None:
        slots = self._held.get(client)
        if slots is not None:
            slots.discard(slot)
            if not slots:
                del self._held[client]
        # Bounded retries are the store's; if it stays down the lease frees the slot.
        with contextlib.suppress(StoreUnavailableError):
            await self.store.give_back(client, slot)

    async def keep_leases(self) -> None:
        """Run for the app's life: renew every held slot three times a lease."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if not self._held:
                continue
            try:
                await self.store.renew(
                    {c: set(s) for c, s in self._held.items()}, self.lease_seconds
                )
            except StoreUnavailableError:
                log.warning("could not renew the leases of clients' answer slots")
