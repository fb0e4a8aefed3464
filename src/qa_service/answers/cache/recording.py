"""A finished answer as the cache keeps it: its pieces, the gaps between them, and
its summary (finish reason, usage, who wrote it).

Pieces, not the joined text: a hit is sent in the same pieces as the original,
so a client that renders as pieces come sees the same answer. The gaps let a
replay keep the original's pace (QA_ANSWER_CACHE_REPLAY=original).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import asdict, dataclass, replace

from qa_service.answers.run import TextSource
from qa_service.core.events import AnswerSummary
from qa_service.generation.report import GenerationReport

_FORMAT = 1


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    texts: tuple[str, ...]
    # Milliseconds before each piece: from the start, then from the piece before.
    gaps_ms: tuple[int, ...]
    summary: AnswerSummary

    def encode(self) -> bytes:
        # ASCII-escaped, as the answer logs: a lone surrogate survives the trip.
        return json.dumps(
            {
                "format": _FORMAT,
                "texts": self.texts,
                "gaps_ms": self.gaps_ms,
                "summary": asdict(self.summary),
            },
            separators=(",", ":"),
        ).encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> RecordedAnswer | None:
        """None for an entry this version cannot read (written by a newer one)."""
        raw = json.loads(data)
        if raw.get("format") != _FORMAT:
            return None
        return cls(tuple(raw["texts"]), tuple(raw["gaps_ms"]), AnswerSummary(**raw["summary"]))

    def report(self, report: GenerationReport) -> None:
        """Fill `report` as the original's model run did."""
        report_as(self.summary, report)


def report_as(summary: AnswerSummary, report: GenerationReport) -> None:
    """Fill `report` with how the answer `summary` ends finished, and who wrote it:
    a hit or a join reports the original's, as its own Done then says."""
    report.finish_reason = summary.finish_reason
    report.usage = summary.usage
    report.provider = summary.provider
    report.model = summary.model


class RecordingSource:
    """`inner`'s text, passed on unchanged, with each piece and its gap kept."""

    def __init__(self, inner: TextSource) -> None:
        self._inner = inner
        self._texts: list[str] = []
        self._gaps_ms: list[int] = []

    async def stream(self, report: GenerationReport) -> AsyncGenerator[str]:
        last = time.perf_counter()
        texts = self._inner.stream(report)
        async with aclosing(texts):
            async for text in texts:
                now = time.perf_counter()
                self._texts.append(text)
                self._gaps_ms.append(round((now - last) * 1000))
                last = now
                yield text

    def recorded(self, summary: AnswerSummary) -> RecordedAnswer:
        # The summary as the original's: no cache marker of its own.
        return RecordedAnswer(
            tuple(self._texts), tuple(self._gaps_ms), replace(summary, cache=None)
        )
