"""The text of answers the cache serves without asking the provider.

- A hit replays a recording (`ReplaySource`): at once, or at the original's
  pace with each gap capped, so a slow original does not stay slow.
- A join reads the shared answer's log as any resuming reader does
  (`RelaySource`), from whichever replica writes it; its reader's place keeps the
  shared answer's presence, so the answer's producer knows someone still reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from qa_service.answers.cache.recording import RecordedAnswer, report_as
from qa_service.answers.follow import FollowTiming, follow
from qa_service.answers.registry import AnswerRegistry
from qa_service.core.errors import PublicError, QAServiceError
from qa_service.core.events import Done, Failed, Text
from qa_service.generation.report import GenerationReport

# The longest pause an `original` replay keeps between two pieces (and before
# the first): a model's typical pace, well under a slow one's.
MAX_REPLAY_GAP_SECONDS = 0.1


class SharedAnswerFailedError(QAServiceError):
    """The answer a join read ended with an error: the joiner ends with the same."""

    def __init__(self, public: PublicError) -> None:
        super().__init__(public)


@dataclass(frozen=True, slots=True)
class ReplaySource:
    recording: RecordedAnswer
    # Keep the original's gaps (capped); False sends every piece at once.
    paced: bool = False

    async def stream(self, report: GenerationReport) -> AsyncGenerator[str]:
        recording = self.recording
        for text, gap_ms in zip(recording.texts, recording.gaps_ms, strict=True):
            if self.paced and gap_ms > 0:
                await asyncio.sleep(min(gap_ms / 1000, MAX_REPLAY_GAP_SECONDS))
            yield text
        recording.report(report)


@dataclass(frozen=True, slots=True)
class RelaySource:
    """The text of answer `shared_id`, as its log gives it, then its ending."""

    registry: AnswerRegistry
    shared_id: str

    async def stream(self, report: GenerationReport) -> AsyncGenerator[str]:
        registry, shared_id = self.registry, self.shared_id
        place = registry.readers.admit(shared_id)
        try:
            # After seq 0: the shared answer's meta is its own; this answer has one too.
            events = follow(
                registry.store,
                shared_id,
                0,
                FollowTiming(),
                on_producer_lost=registry.report_producer_lost,
                generating_here=lambda: registry.generating(shared_id),
            )
            async with aclosing(events):
                async for event in events:
                    match event:
                        case Text(_, text):
                            yield text
                        case Done(_, summary):
                            report_as(summary, report)
                            return
                        case Failed(_, error):
                            raise SharedAnswerFailedError(error)
        finally:
            await place.leave()
