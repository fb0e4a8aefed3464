"""Stored responses: what the Responses dialect (`/v1/responses`) keeps of each answer
it starts with `store: true`, so a client can retrieve, resume, cancel and continue it.

A response id is not an answer id. The answer id is a capability on the native
routes (it reads and cancels its answer with no key), so it never leaves the
service here: a response id finds its record, and the record its answer, only
for the client that made it (the API key's client with keys on, else its
address: api/deps.py client_of). Another client's id is a 404, the same as an
unknown one. Ids are 192 random bits: never guessed, and the same on every
replica, since the record is in the shared store (QA_REDIS_URL).

The record holds the conversation (the checked history and the question),
because `previous_response_id` sends it to the provider again; that is what
`store` means, and why `store: false` keeps no record. It lives as long as the
answer's log (QA_RESUME_TTL_SECONDS). Only a digest of the id is a key.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from qa_service.answers.chats import ChatStore
from qa_service.generation.history import Turn
from qa_service.wire.openai_responses import ResponseFacts

RESPONSE_ID = re.compile(r"resp_[0-9a-f]{48}")


def new_response_id() -> str:
    return f"resp_{secrets.token_hex(24)}"


def new_item_id() -> str:
    return f"msg_{secrets.token_hex(24)}"


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """One stored response: whose it is, its answer, and what it was asked."""

    answer_id: str
    client: str
    # What every rendering of it repeats: its ids, model, creation, cap.
    facts: ResponseFacts
    # The conversation the provider was sent: the history, then the question.
    turns: tuple[Turn, ...]

    @property
    def response_id(self) -> str:
        return self.facts.id

    def to_json(self) -> str:
        data = asdict(self)
        data["turns"] = [[turn.role, turn.content] for turn in self.turns]
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ResponseRecord:
        data: dict[str, Any] = json.loads(text)
        data["facts"] = ResponseFacts(**data["facts"])
        data["turns"] = tuple(Turn(role, content) for role, content in data["turns"])
        return cls(**data)


class StoredResponses:
    """Each stored response, for as long as its answer's log is kept."""

    def __init__(self, store: ChatStore, ttl_seconds: int) -> None:
        self._store = store
        self._ttl = ttl_seconds

    async def keep(self, record: ResponseRecord) -> None:
        await self._store.put(_key(record.response_id), record.to_json(), self._ttl)

    async def find(self, response_id: str, client: str) -> ResponseRecord | None:
        """The record, if `client` made it and it has not expired; else None
        (an id of another client's response reads exactly like an unknown one)."""
        if not RESPONSE_ID.fullmatch(response_id):
            return None
        found = await self._store.get(_key(response_id))
        if found is None:
            return None
        record = ResponseRecord.from_json(found)
        # The id is a secret, but a leaked one still reads nothing of another client's.
        return record if secrets.compare_digest(record.client, client) else None


def _key(response_id: str) -> str:
    return hashlib.sha256(response_id.encode("ascii")).hexdigest()
