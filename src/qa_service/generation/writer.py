"""AIWriter: `prompt | chat model | StrOutputParser()`, streamed. Knows nothing of HTTP.

The parser is InlineStrOutputParser, a StrOutputParser that parses in the
event loop (see its docstring).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.runnables import Runnable, RunnableConfig

from qa_service.core.errors import UpstreamStalledError
from qa_service.generation.history import HISTORY_VARIABLE, Turn, as_messages
from qa_service.generation.prompts import QUERY_VARIABLE, Prompt
from qa_service.generation.report import GenerationReport, ReportHandler


@dataclass(frozen=True, slots=True)
class GenerationLimits:
    """What the writer enforces itself, whatever the provider does. None: no bound."""

    # The first piece must come this soon after the request (connect, retries
    # and the model's thinking included); SSE comments do not count.
    first_piece_seconds: float | None = None
    # Then no gap between two pieces may be longer.
    idle_seconds: float | None = None
    # QA_MAX_TOKENS, counted in the provider's pieces: each holds at least one
    # token, so a provider that keeps to the cap is never cut short.
    max_pieces: int | None = None


class InlineStrOutputParser(StrOutputParser):
    """StrOutputParser whose async stream parses in the event loop, not a thread.

    langchain-core's BaseTransformOutputParser._atransform sends every chunk
    through run_in_executor (langchain-ai/langchain#24031 moved parsing to
    background threads for heavy JSON parsers). For a str pass-through that
    is a thread-pool hop per token: the hop costs far more than the parse.
    Same result, chunk for chunk; tests/unit/test_writer.py checks both.
    """

    async def _atransform(self, input: AsyncIterator[str | BaseMessage]) -> AsyncIterator[str]:
        async for chunk in input:
            if isinstance(chunk, BaseMessage):
                yield self.parse_result([ChatGeneration(message=chunk)])
            else:
                yield self.parse_result([Generation(text=chunk)])


class AIWriter:
    """Writes answers with one chat model and a set of named prompts."""

    def __init__(
        self,
        model: Runnable[Any, Any],
        prompts: Mapping[str, Prompt],
        limits: GenerationLimits | None = None,
    ) -> None:
        self._limits = limits or GenerationLimits()
        self._chains: dict[str, Runnable[dict[str, Any], str]] = {
            name: prompt.template | model | InlineStrOutputParser()
            for name, prompt in prompts.items()
        }

    @property
    def prompt_names(self) -> list[str]:
        return sorted(self._chains)

    async def stream(
        self,
        question: str,
        *,
        prompt: str,
        history: Sequence[Turn] = (),
        report: GenerationReport | None = None,
        configurable: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[str]:
        """Yield the answer's text as the model writes it; empty pieces are skipped.

        `history` is the conversation so far, oldest first, already trimmed.

        Raises UpstreamStalledError when the model falls silent for longer than
        the limits allow. A piece past `max_pieces` is not sent: it stops there,
        closes the chain, and reports finish_reason "length", as a provider that
        keeps to the cap would.
        """
        config = RunnableConfig(
            run_name="ai_write",
            callbacks=[ReportHandler(report)] if report is not None else [],
            configurable=dict(configurable or {}),
        )
        limits = self._limits
        # Runnable.astream is typed AsyncIterator, but it is an async generator,
        # closed explicitly, not left to the event loop's finalizer. That does
        # not reach the generators LangChain nests below it (their run ends a
        # few loop turns later) nor the model's own stream; the HTTP response
        # under them is closed by the answer (upstream.py).
        chunks = cast(
            AsyncGenerator[str],
            self._chains[prompt].astream(
                {QUERY_VARIABLE: question, HISTORY_VARIABLE: as_messages(history)}, config=config
            ),
        )
        loop = asyncio.get_running_loop()
        deadline = _after(loop, limits.first_piece_seconds)
        pieces = 0
        async with aclosing(chunks):
            while True:
                try:
                    # asyncio.timeout, not wait_for: it runs in this task, so a
                    # cancel from outside is never mistaken for (or lost to) a
                    # timeout. It bounds only the wait for the model, never the
                    # time our consumer takes between pieces.
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise UpstreamStalledError from None
                if chunk:
                    if limits.max_pieces is not None and pieces == limits.max_pieces:
                        # A piece past the cap: the provider ignores it. Cut
                        # here; one that keeps to it sends only its finish
                        # and usage after the last piece, and ends as usual.
                        if report is not None:
                            report.finish_reason = "length"
                        return
                    pieces += 1
                    yield chunk
                if pieces:
                    deadline = _after(loop, limits.idle_seconds)


def _after(loop: asyncio.AbstractEventLoop, seconds: float | None) -> float | None:
    return None if seconds is None else loop.time() + seconds


__all__ = ["AIWriter", "GenerationLimits", "InlineStrOutputParser"]
