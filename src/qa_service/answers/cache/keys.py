"""What makes two questions the same answer: everything that shapes it.

The key is a digest: the store never holds a question or a client's name in it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qa_service.answers.model import AnswerRequest

# The scope that shares answers between every client (QA_ANSWER_CACHE_SCOPE=global).
GLOBAL_SCOPE = "*"


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the process's configuration adds to a request's shape: who answers,
    and the sampling and length settings it is asked with."""

    provider: str
    model: str
    sampling: Mapping[str, Any] = field(default_factory=dict)


def cache_key(request: AnswerRequest, scope: str, shape: ModelShape) -> str:
    """The key of `request`'s answer within `scope` (a client, or GLOBAL_SCOPE)."""
    shape_of_request: dict[str, Any] = {
        "scope": scope,
        "provider": shape.provider,
        "model": shape.model,
        "sampling": sorted(shape.sampling.items()),
        "prompt": request.prompt,
        "prompt_version": request.prompt_version,
        "question": request.question,
        "history": [[turn.role, turn.content] for turn in request.history],
        "configurable": sorted(request.configurable.items()),
    }
    if request.max_tokens is not None:
        # Only when asked, so the keys of every other answer stay as they were.
        shape_of_request["max_tokens"] = request.max_tokens
    canonical = json.dumps(
        shape_of_request,
        ensure_ascii=True,
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
