"""Stream tickets: a single-use, short-lived stand-in for an API key in a URL.

`EventSource` cannot send an Authorization header, so a client with a key asks
for a ticket (POST /stream-tickets) and puts it in the URL: `?ticket=...`.
A ticket is bound to one request (its AnswerRequest fingerprint) and to the
digest of the key that asked for it: it is good only while that key is (a key
removed from the keys file takes its unspent tickets with it, on every replica
that no longer lists it), and it counts against that key's client as the
keys file names it when the ticket is used. It is spent by the first attempt to
use it, whatever the outcome, so a URL that leaks (a proxy's log, a browser's
history) is worthless by then; and it expires after QA_TICKET_TTL_SECONDS.

The store keeps only a ticket's sha256 digest: whoever reads the store (a
Redis dump, `MONITOR`) cannot redeem what they see.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from qa_service.access.keys import KeyRing
from qa_service.answers.model import AnswerRequest

# secrets.token_urlsafe(32): 43 characters of base64url, 256 bits.
TICKET = re.compile(r"[A-Za-z0-9_-]{43}")


class TicketStore(Protocol):
    """Where tickets wait to be redeemed (stores/memory_values.py, stores/redis_values.py)."""

    async def put(self, digest: str, grant: str, ttl_seconds: int) -> None:
        """Keep `grant` under `digest` for `ttl_seconds`."""

    async def take(self, digest: str) -> str | None:
        """Remove and return the grant under `digest`, or None if there is none
        (never put, already taken, or expired). Atomic: of two concurrent takes
        of one digest, on any replicas, at most one gets the grant."""


class TicketRefusal(Enum):
    """Why a ticket was not accepted: for metrics only. Clients hear one message."""

    UNKNOWN = "bad_ticket"  # never issued, spent, expired, or not ticket-shaped
    MISMATCH = "ticket_mismatch"  # issued for another request
    KEY_REMOVED = "ticket_key_removed"  # bought with a key the service no longer lists


@dataclass(frozen=True, slots=True)
class Redeemed:
    """A ticket accepted for its request; `client_id` is "" when it was issued
    without a key, or keys are off now."""

    client_id: str


class StreamTickets:
    """Issues and redeems tickets over a TicketStore."""

    def __init__(self, store: TicketStore, ttl_seconds: int) -> None:
        self._store = store
        self.ttl_seconds = ttl_seconds

    async def issue(self, key_digest: str, request: AnswerRequest) -> str:
        """A new ticket for `request`, bought with the key of `key_digest` ("" without keys)."""
        ticket = secrets.token_urlsafe(32)
        grant = json.dumps({"key": key_digest, "request": request.fingerprint()})
        await self._store.put(_digest(ticket), grant, self.ttl_seconds)
        return ticket

    async def redeem(
        self, ticket: str, request: AnswerRequest, keys: KeyRing | None
    ) -> Redeemed | TicketRefusal:
        """Spend `ticket`; accepted only if it was issued for this very request, and
        (when `keys` are on) with a key they still list."""
        if not TICKET.fullmatch(ticket):
            return TicketRefusal.UNKNOWN
        grant = await self._store.take(_digest(ticket))
        if grant is None:
            return TicketRefusal.UNKNOWN
        fields = json.loads(grant)
        if fields["request"] != request.fingerprint():
            return TicketRefusal.MISMATCH
        if keys is None:
            return Redeemed("")  # keys off: anyone may start an answer, and counts as an address
        # .get: a grant written before grants named their key (a rolling upgrade)
        # cannot show that its key is still listed.
        client = keys.client_of(str(fields.get("key", "")))
        return Redeemed(client) if client is not None else TicketRefusal.KEY_REMOVED


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("ascii")).hexdigest()
