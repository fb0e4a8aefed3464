"""An answer's request, its id, and what it counts and leaves for logs and metrics."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from qa_service.core.errors import PublicError
from qa_service.core.events import AnswerMeta, AnswerSummary
from qa_service.generation.history import Turn
from qa_service.generation.report import GenerationReport

# 16 random bytes, base64url without padding: 22 characters, 128 bits. Like
# every id and name pattern here, used with fullmatch: `$` would let "id\n" by.
ANSWER_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def answer_ref(answer_id: str) -> str:
    """What logs name an answer by: 12 hex digits of its id's sha256, which read
    and cancel nothing (docs/operations.md, "Logs").

    An id is a capability (it reads and cancels its answer with no key), so no
    log line holds one. A plain hash is enough: the id is 128 random bits, so
    its hash can be neither reversed nor guessed. A keyed one would add nothing
    but a secret that every replica (and nginx) would have to share, and would
    stop an operator handed an id from finding its lines.
    """
    return hashlib.sha256(answer_id.encode("utf-8")).hexdigest()[:12]


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
    # The prompt's version when the request was checked (generation/prompts.py);
    # not in the fingerprint: a resume after the file changed still matches.
    prompt_version: str = ""
    # A lower output cap than QA_MAX_TOKENS, asked for by the request (the
    # Responses dialect's max_output_tokens); None: QA_MAX_TOKENS alone.
    max_tokens: int | None = None

    def fingerprint(self) -> str:
        """A digest of everything that shapes the answer. A resume must match it;
        the store keeps the digest, never the question."""
        shape: list[Any] = [self.question, self.prompt, sorted(self.configurable.items())]
        if self.history:
            # Only when there is one: a question without history keeps the
            # digest it had before conversations, so stored answers resume.
            shape.append([[turn.role, turn.content] for turn in self.history])
        if self.max_tokens is not None:
            # Likewise only when asked: a cut answer is another answer.
            shape.append({"max_tokens": self.max_tokens})
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
    answer_ref: str  # never the id itself: answer_ref() says why
    provider: str  # as configured, like the answer's meta
    model: str
    # Who wrote the text (None if no model did): the fallback when `fallback`.
    answered_provider: str | None
    answered_model: str | None
    fallback: bool
    prompt: str
    prompt_version: str | None
    # What the answer cache did (hit | join | miss | bypass), `source` for the
    # provider call a cache's readers share; None with the cache off.
    cache: str | None
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


@dataclass(slots=True)
class RunStats:
    """What one answer's run counts as it goes; its Done summary and its record
    are built from these, with what the model reported."""

    outcome: str = "client_disconnected"  # until the run says otherwise
    error_code: str | None = None
    error_cause: str | None = None
    upstream_status: int | None = None
    ttft_ms: float | None = None
    chars: int = 0
    pieces: int = 0
    output_tokens: int | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def billed_tokens(self) -> int:
        """What the answer cost its client: the provider's count of output
        tokens, or its characters when the provider reported none (a cut stream)."""
        return self.output_tokens if self.output_tokens is not None else self.chars

    def count_text(self, chunk: str) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = self.elapsed_ms()
        self.chars += len(chunk)
        self.pieces += 1

    def note_error(self, public: PublicError, cause: str, status: int | None = None) -> None:
        self.outcome = "error"
        self.error_code = public.code
        # Type and status only: provider error bodies can echo the API key.
        self.error_cause = cause
        self.upstream_status = status

    def note_stop(self, public: PublicError, outcome: str) -> None:
        """The run was stopped from outside: cancelled, left, or aborted (`error`)."""
        if outcome == "error":
            self.note_error(public, "Aborted")
        else:
            self.outcome = outcome
            self.error_code = public.code if outcome == "cancelled" else None

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 1)

    def summary(self, report: GenerationReport) -> AnswerSummary:
        return AnswerSummary(
            finish_reason=report.finish_reason,
            usage=report.usage,
            ttft_ms=self.ttft_ms,
            chars=self.chars,
            duration_ms=self.elapsed_ms(),
            provider=report.provider,
            model=report.model,
        )

    def record(self, meta: AnswerMeta, report: GenerationReport) -> AnswerRecord:
        usage = report.usage or {}
        return AnswerRecord(
            request_id=meta.request_id,
            answer_ref=answer_ref(meta.answer_id),
            provider=meta.provider,
            model=meta.model,
            answered_provider=report.provider,
            answered_model=report.model,
            fallback=report.fallback,
            prompt=meta.prompt,
            prompt_version=meta.prompt_version,
            cache=meta.cache,
            outcome=self.outcome,
            error_code=self.error_code,
            error_cause=self.error_cause,
            upstream_status=self.upstream_status,
            finish_reason=report.finish_reason,
            pieces=self.pieces,
            chars=self.chars,
            ttft_ms=self.ttft_ms,
            duration_ms=self.elapsed_ms(),
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
        )


class AnswerObserver(Protocol):
    def answer_started(self, meta: AnswerMeta) -> None: ...
    def answer_finished(self, record: AnswerRecord) -> None: ...
    def producer_lost(self) -> None:
        """A reader here found an answer's producer gone, and ended its log."""
