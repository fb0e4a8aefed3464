"""AIWriter: `prompt | chat model | StrOutputParser()`, streamed. Knows nothing of HTTP.

The parser is InlineStrOutputParser, a StrOutputParser that parses in the
event loop (see its docstring). One chain per prompt version, built when an
answer first needs it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.runnables import Runnable, RunnableConfig

from qa_service.core.errors import UpstreamStalledError
from qa_service.generation.call_spans import CALL_TRACING, CallSpans
from qa_service.generation.history import HISTORY_VARIABLE, Turn, as_messages
from qa_service.generation.prompt_library import PromptLibrary
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


_Chain = Runnable[dict[str, Any], str]


class AIWriter:
    """Writes answers with one chat model and a library of named prompts.

    Chains are kept per (prompt, version): a version's chain is built once,
    and forgotten when that version has left force and no answer streams it.
    So the cache holds at most the versions in force plus those still in use.
    """

    def __init__(
        self,
        model: Runnable[Any, Any],
        prompts: PromptLibrary | Mapping[str, Prompt],
        limits: GenerationLimits | None = None,
    ) -> None:
        self._limits = limits or GenerationLimits()
        self._model = model
        self._parser = InlineStrOutputParser()
        # What a provider call's span says it asked for (generation/call_spans.py).
        self._max_tokens: int | None = getattr(model, "max_tokens", None)
        self._temperature: float | None = getattr(model, "temperature", None)
        self._prompts = prompts if isinstance(prompts, PromptLibrary) else PromptLibrary(prompts)
        self._chains: dict[tuple[str, str], _Chain] = {}
        self._streaming: Counter[tuple[str, str]] = Counter()
        for prompt in self._prompts.in_force.values():
            self._chain_for(prompt)

    @property
    def prompt_names(self) -> list[str]:
        return self._prompts.names()

    @property
    def chain_versions(self) -> list[tuple[str, str]]:
        """The (prompt, version) pairs with a chain built now."""
        return sorted(self._chains)

    def _chain_for(self, prompt: Prompt) -> _Chain:
        key = (prompt.name, prompt.version)
        chain = self._chains.get(key)
        if chain is None:
            chain = self._chains[key] = prompt.template | self._model | self._parser
        return chain

    def _forget_retired(self) -> None:
        for key in list(self._chains):
            if not self._streaming[key] and not self._prompts.is_in_force(*key):
                del self._chains[key]
                del self._streaming[key]

    async def stream(
        self,
        question: str,
        *,
        prompt: str,
        prompt_version: str = "",
        history: Sequence[Turn] = (),
        report: GenerationReport | None = None,
        configurable: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str]:
        """Yield the answer's text as the model writes it; empty pieces are skipped.

        `prompt_version` is the version the request was checked on ("": the
        one in force now): the answer is written with exactly that one, even if
        the file changed since (PromptVersionGoneError if it is no longer kept).
        `history` is the conversation so far, oldest first, already trimmed.

        Raises UpstreamStalledError when the model falls silent for longer than
        the limits allow. A piece past `max_pieces` (or past `max_tokens`, a
        lower cap the request asked for, which the provider is asked to keep
        too) is not sent: it stops there, closes the chain, and reports
        finish_reason "length", as a provider that keeps to the cap would.
        """
        callbacks: list[BaseCallbackHandler] = []
        call_spans = None
        if report is not None:
            callbacks.append(ReportHandler(report))
            if CALL_TRACING.on:
                # After the report's handler: each span reads the report as its run ends.
                call_spans = CallSpans(report, max_tokens or self._max_tokens, self._temperature)
                callbacks.append(call_spans)
        config = RunnableConfig(
            run_name="ai_write", callbacks=callbacks, configurable=dict(configurable or {})
        )
        limits = self._limits
        chosen = self._prompts.find(prompt, prompt_version)
        key = (chosen.name, chosen.version)
        chain = self._chain_for(chosen)
        max_pieces = limits.max_pieces
        if max_tokens is not None:
            # Bound per answer: the provider stops (and bills) at the request's
            # cap, not the process's. A chain of three parts: cheap to build.
            chain = chosen.template | self._model.bind(max_tokens=max_tokens) | self._parser
            max_pieces = max_tokens if max_pieces is None else min(max_pieces, max_tokens)
        # Runnable.astream is typed AsyncIterator, but it is an async generator,
        # closed explicitly, not left to the event loop's finalizer. That does
        # not reach the generators LangChain nests below it (their run ends a
        # few loop turns later) nor the model's own stream; the HTTP response
        # under them is closed by the answer (upstream.py).
        chunks = cast(
            AsyncGenerator[str],
            chain.astream(
                {QUERY_VARIABLE: question, HISTORY_VARIABLE: as_messages(history)}, config=config
            ),
        )
        loop = asyncio.get_running_loop()
        deadline = _after(loop, limits.first_piece_seconds)
        pieces = 0
        self._streaming[key] += 1
        try:
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
                        if max_pieces is not None and pieces == max_pieces:
                            # A piece past the cap: the provider ignores it. Cut
                            # here; one that keeps to it sends only its finish
                            # and usage after the last piece, and ends as usual.
                            if report is not None:
                                report.finish_reason = "length"
                            return
                        pieces += 1
                        if pieces == 1 and call_spans is not None:
                            call_spans.first_text()
                        yield chunk
                    if pieces:
                        deadline = _after(loop, limits.idle_seconds)
        finally:
            if call_spans is not None:
                call_spans.close()
            self._streaming[key] -= 1
            self._forget_retired()


def _after(loop: asyncio.AbstractEventLoop, seconds: float | None) -> float | None:
    return None if seconds is None else loop.time() + seconds


__all__ = ["AIWriter", "GenerationLimits", "InlineStrOutputParser"]
