"""AIWriter: `prompt | chat model | StrOutputParser()`, streamed. Knows nothing of HTTP."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig

from qa_service.prompts import QUERY_VARIABLE, Prompt


@dataclass(slots=True)
class GenerationReport:
    """What the model said about its answer once it finished."""

    finish_reason: str | None = None
    usage: dict[str, int] | None = None


class _ReportHandler(AsyncCallbackHandler):
    """Fills a GenerationReport from the aggregated message at the end of the run."""

    def __init__(self, report: GenerationReport) -> None:
        self._report = report

    async def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        if not response.generations or not response.generations[0]:
            return
        generation = response.generations[0][0]
        info = generation.generation_info or {}
        if isinstance(generation, ChatGeneration):
            message = generation.message
            info = {**message.response_metadata, **info}
            if isinstance(message, AIMessage) and message.usage_metadata:
                usage = message.usage_metadata
                self._report.usage = {
                    "input_tokens": usage["input_tokens"],
                    "output_tokens": usage["output_tokens"],
                    "total_tokens": usage["total_tokens"],
                }
        if info.get("finish_reason"):
            self._report.finish_reason = str(info["finish_reason"])


class AIWriter:
    """Writes answers with one chat model and a set of named prompts."""

    def __init__(self, model: Runnable[Any, Any], prompts: Mapping[str, Prompt]) -> None:
        self._chains: dict[str, Runnable[dict[str, str], str]] = {
            name: prompt.template | model | StrOutputParser() for name, prompt in prompts.items()
        }

    @property
    def prompt_names(self) -> list[str]:
        return sorted(self._chains)

    async def stream(
        self,
        question: str,
        *,
        prompt: str,
        report: GenerationReport | None = None,
        configurable: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[str]:
        """Yield the answer's text as the model writes it; empty pieces are skipped."""
        config = RunnableConfig(
            run_name="ai_write",
            callbacks=[_ReportHandler(report)] if report is not None else [],
            configurable=dict(configurable or {}),
        )
        # Runnable.astream is typed AsyncIterator, but it is an async generator,
        # and it must be closed explicitly so the model's HTTP response closes.
        chunks = cast(
            AsyncGenerator[str],
            self._chains[prompt].astream({QUERY_VARIABLE: question}, config=config),
        )
        async with aclosing(chunks):
            async for chunk in chunks:
                if chunk:
                    yield chunk


__all__ = ["AIWriter", "GenerationReport"]
