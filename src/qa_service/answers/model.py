"""An answer's request, its id, and the record it leaves for logs and metrics."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from qa_service.core.events import AnswerMeta
from qa_service.generation.history import Turn

# 16 random bytes, base64url without padding: 22 characters, 128 bits.
ANSWER_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


def new_answer_id() -> str:
    """Server-made and unguessable: knowing it is what lets a client read or cancel."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    question: str
    prompt: str
    configurable: Mapping[str, Any]
    # The conversation before `question`, oldest first, trimmed to its budget.
    history: tuple[Turn, ...] = ()

    def fingerprint(self) -> str:
        """A digest of everything that shapes the answer. A resume must match it;
        the store keeps the digest, never the question."""
        shape: list[Any] = [self.question, self.prompt, sorted(self.configurable.items())]
        if self.history:
            # Only when there is one: a question without history keeps the
            # digest it had before conversations, so stored answers resume.
            shape.append([[turn.role, turn.content] for turn in self.history])
        canonical = json.dumps(
            shape,
            ensure_ascii=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """How one answer went, for logs and metrics. Every field goes into the answer's
    log line as it is (observability/telemetry.py): never the question or the text."""

    request_id: str
    answer_id: str
    provider: str  # as configured, like the answer's meta
    model: str
    # Who wrote the text (None if no model did): the fallback when `fallback`.
    answered_provider: str | None
    answered_model: str | None
    fallback: bool
    prompt: str
    outcome: str  # complete | error | cancelled | client_disconnected
    error_code: str | None
    error_cause: str | None  # exception type; its message can carry secrets
    upstream_status: int | None
    finish_reason: str | None
    pieces: int
    chars: int
    ttft_ms: float | None
    duration_ms: float
    input_tokens: int | None
    output_tokens: int | None


class AnswerObserver(Protocol):
    def answer_started(self, meta: AnswerMeta) -> None: ...
    def answer_finished(self, record: AnswerRecord) -> None: ...
    def producer_lost(self) -> None:
        """A reader here found an answer's producer gone, and ended its log."""
