"""Which answer each client's chat is streaming: what the AI SDK dialect resumes by chat id.

`useChat` reconnects with `GET /api/chat/{chat id}/stream`, naming the chat,
not the answer. The chat id is the client's choice, so it is no secret: the
index is scoped to the client (the API key's client with keys on, else its
address, api/deps.py client_of), and one client never reaches another's
answers through it. Only a digest of (client, chat id) is stored.
"""

from __future__ import annotations

import hashlib
import json
from typing import Protocol


class ChatStore(Protocol):
    """Where the index lives (stores/chats.py, in this process; stores/redis_chats.py)."""

    async def put(self, key: str, answer_id: str, ttl_seconds: int) -> None:
        """`key` names `answer_id` for `ttl_seconds`, replacing what it named before."""

    async def get(self, key: str) -> str | None:
        """The answer id `key` names, or None (never put, or expired)."""


class ChatAnswers:
    """Each chat's latest answer, for as long as an answer's log is kept (QA_RESUME_TTL_SECONDS)."""

    def __init__(self, store: ChatStore, ttl_seconds: int) -> None:
        self._store = store
        self._ttl = ttl_seconds

    async def remember(self, client: str, chat_id: str, answer_id: str) -> None:
        await self._store.put(_key(client, chat_id), answer_id, self._ttl)

    async def latest(self, client: str, chat_id: str) -> str | None:
        return await self._store.get(_key(client, chat_id))


def _key(client: str, chat_id: str) -> str:
    # JSON keeps the two apart whatever characters either holds.
    pair = json.dumps([client, chat_id], ensure_ascii=True)
    return hashlib.sha256(pair.encode("ascii")).hexdigest()
