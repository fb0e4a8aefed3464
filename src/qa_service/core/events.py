"""An answer's domain events, numbered from 0, independent of any wire dialect.

An answer's log is `Meta` (seq 0), then `Text`s, then exactly one `Done` or
`Failed`. Dialects render these when they are sent (wire/); stores keep them
as plain dicts (`to_dict`, `from_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from qa_service.core.errors import PublicError

# The seq of an event meant for one connection only (a replica's own
# shutting_down notice, an unreachable store). It is never in the log and is
# sent without an id, so a client's Last-Event-ID keeps pointing into the log.
NOT_LOGGED = -1


class CacheOutcome(StrEnum):
    """What the answer cache did for an answer (answers/cache/)."""

    HIT = "hit"  # replayed a finished answer: no provider call
    JOIN = "join"  # read an identical answer still being written
    MISS = "miss"  # asked the provider; the answer is shared and kept
    BYPASS = "bypass"  # asked afresh, as Cache-Control said
    # Internal: the provider call a miss's and its joiners' answers read. Its
    # log and its log line are the service's own; no client is given its id.
    SOURCE = "source"


@dataclass(frozen=True, slots=True)
class AnswerMeta:
    request_id: str
    provider: str
    model: str
    prompt: str
    answer_id: str = ""
    demo_fallback: bool = False
    notice: str | None = None
    scenario: str | None = None
    # The prompt's version the answer is written with (generation/prompts.py
    # version_of); None in logs stored before versions existed.
    prompt_version: str | None = None
    # With the answer cache on (QA_ANSWER_CACHE_TTL_SECONDS): what it did for
    # this answer, hit | join | miss | bypass (docs/PROTOCOL.md "Caching").
    cache: str | None = None


@dataclass(frozen=True, slots=True)
class AnswerSummary:
    finish_reason: str | None
    usage: dict[str, int] | None
    ttft_ms: float | None
    chars: int
    duration_ms: float
    # Who answered: the configured provider, or its fallback (meta names the
    # configured one). Defaults: logs stored before these fields existed.
    provider: str | None = None
    model: str | None = None
    # As the meta's `cache`: a `hit` reports the original answer's usage.
    cache: str | None = None


@dataclass(frozen=True, slots=True)
class Meta:
    seq: int
    info: AnswerMeta


@dataclass(frozen=True, slots=True)
class Text:
    seq: int
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    seq: int
    summary: AnswerSummary


@dataclass(frozen=True, slots=True)
class Failed:
    seq: int
    error: PublicError


AnswerEvent = Meta | Text | Done | Failed


def is_terminal(event: AnswerEvent) -> bool:
    return isinstance(event, Done | Failed)


def to_dict(event: AnswerEvent) -> dict[str, Any]:
    """The event as JSON-able data, for a store. `from_dict` reverses it exactly."""
    match event:
        case Text(seq, text):
            return {"seq": seq, "text": text}
        case Meta(seq, info):
            return {"seq": seq, "meta": asdict(info)}
        case Done(seq, summary):
            return {"seq": seq, "done": asdict(summary)}
        case Failed(seq, error):
            return {"seq": seq, "error": asdict(error)}


def from_dict(data: dict[str, Any]) -> AnswerEvent:
    seq = int(data["seq"])
    if "text" in data:
        return Text(seq, str(data["text"]))
    if "meta" in data:
        return Meta(seq, AnswerMeta(**data["meta"]))
    if "done" in data:
        return Done(seq, AnswerSummary(**data["done"]))
    return Failed(seq, PublicError(**data["error"]))
