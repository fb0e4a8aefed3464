"""GenerationReport: what the model runs of one answer said about it, gathered from callbacks.

An answer is one chat model run, or two when the primary fails before any
text and the fallback answers (providers.py with_fallback). Each run names its provider and
model in the `ls_provider` / `ls_model_name` metadata LangChain gives
`on_chat_model_start`; the run that sends the first text is the one that
answered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from qa_service.generation.failures import upstream_status

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GenerationReport:
    """What the model said about its answer once it finished."""

    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    # Who answered: set by the first text (or the end of an answer without
    # any), so None when no model got that far.
    provider: str | None = None
    model: str | None = None
    # The fallback answered: the primary failed before any text.
    fallback: bool = False


class ReportHandler(AsyncCallbackHandler):
    """Fills a GenerationReport from the model runs' callbacks."""

    # Awaited in line. Otherwise langchain-core's ahandle_event runs it under
    # asyncio.gather, which wraps it in a new Task for every event: one task
    # per token for on_llm_new_token (benchmarks/profile.py showed it). Its
    # methods never block, so running them in line changes nothing else.
    run_inline = True

    def __init__(self, report: GenerationReport) -> None:
        self._report = report
        # Each chat model run's (provider, model), in the order they started.
        self._runs: dict[UUID, tuple[str | None, str | None]] = {}
        self._errors: dict[UUID, BaseException] = {}

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        previous = next(reversed(self._runs), None)
        metadata = metadata or {}
        self._runs[run_id] = (metadata.get("ls_provider"), metadata.get("ls_model_name"))
        if previous is not None and previous in self._errors:
            fallback_provider, fallback_model = self._runs[run_id]
            log.warning(
                "the primary model failed before any text; asking the fallback",
                extra={
                    **self._failure(previous),
                    "fallback_provider": fallback_provider,
                    "fallback_model": fallback_model,
                },
            )

    async def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if token and self._report.provider is None:
            self._answered_by(run_id)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._errors[run_id] = error
        # LangChain re-raises the primary's error when the fallback fails
        # too, so the fallback's own failure is logged here or nowhere.
        # Exception only: a cancel is no failure.
        first = next(iter(self._runs), None)
        if run_id != first and self._report.provider is None and isinstance(error, Exception):
            log.warning(
                "the fallback model failed before any text too", extra=self._failure(run_id)
            )

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        if self._report.provider is None:
            self._answered_by(run_id)
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

    def _answered_by(self, run_id: UUID) -> None:
        if run_id not in self._runs:
            return
        self._report.provider, self._report.model = self._runs[run_id]
        self._report.fallback = run_id != next(iter(self._runs))

    def _failure(self, run_id: UUID) -> dict[str, Any]:
        provider, model = self._runs[run_id]
        error = self._errors[run_id]
        # The type and status only: provider error text can echo the key.
        return {
            "failed_provider": provider,
            "failed_model": model,
            "error_cause": type(error).__name__,
            "upstream_status": upstream_status(error),
        }
