"""Which answer each browser's chat is streaming: what the AI SDK dialect resumes by chat id.

`useChat` reconnects with `GET /api/chat/{chat id}/stream`, naming the chat,
not the answer. The chat id is the app's choice, so it is no secret: the
index is scoped to the client (the API key's client with keys on, else its
address, api/deps.py client_of) and, within it, to the browser that posted
the chat (its cookie's token, api/chat_browsers.py). One client never
reaches another's answers through it, nor one user of a key (or of an
address) another's. Only a digest of (client, browser, chat id) is stored.
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

    async def remember(self, client: str, browser: str, chat_id: str, answer_id: str) -> None:
        await self._store.put(_key(client, browser, chat_id), answer_id, self._ttl)

    async def latest(self, client: str, browser: str, chat_id: str) -> str | None:
        return await self._store.get(_key(client, browser, chat_id))


def _key(client: str, browser: str, chat_id: str) -> str:
    # JSON keeps the three apart whatever characters each holds.
    names = json.dumps([client, browser, chat_id], ensure_ascii=True)
    return hashlib.sha256(names.encode("ascii")).hexdigest()
