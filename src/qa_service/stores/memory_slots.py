"""Clients' answers in progress (QA_CLIENT_MAX_STREAMS) in this process (access/slots.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping


class MemorySlotStore:
    """One process: its slots need no lease, they end with it."""

    def __init__(self) -> None:
        self._slots: defaultdict[str, set[str]] = defaultdict(set)

    async def take(self, client: str, slot: str, limit: int, lease_seconds: float) -> bool:
        slots = self._slots[client]
        if len(slots) >= limit:
            return False
        slots.add(slot)
        return True

    async def renew(self, held: Mapping[str, set[str]], lease_seconds: float) -> None:
        return None

    async def give_back(self, client: str, slot: str) -> None:
        slots = self._slots.get(client)
        if slots is not None:
            slots.discard(slot)
            if not slots:
                del self._slots[client]
