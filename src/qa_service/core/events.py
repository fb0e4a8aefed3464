"""What an answer reports about itself, independent of any wire dialect."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AnswerMeta:
    request_id: str
    provider: str
    model: str
    prompt: str
    demo_fallback: bool = False
    notice: str | None = None
    scenario: str | None = None


@dataclass(frozen=True, slots=True)
class AnswerSummary:
    finish_reason: str | None
    usage: dict[str, int] | None
    ttft_ms: float | None
    chars: int
    duration_ms: float
