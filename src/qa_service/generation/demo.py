"""The keyless demo provider: a deterministic, paced fake chat model with scenarios.

It exists so a frontend can be built and tested against every situation a real
provider produces, without a key: a slow first token, a cut mid-answer, a long
silence, and text that breaks naive renderers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, get_args

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import ConfigurableField, Runnable

Scenario = Literal["normal", "slow_first_token", "error_mid_stream", "long_silence", "unicode"]
SCENARIOS: tuple[str, ...] = get_args(Scenario)
SCENARIO_CONFIG_KEY = "demo_scenario"

# Everything a naive renderer gets wrong, in one answer: line endings, tabs,
# quotes and backslashes, markup that must stay text, CJK, RTL, combining
# marks, astral-plane emoji and ZWJ sequences (which the chunker below splits).
UNICODE_SAMPLE = (
    "Unicode check. The request was: {request}\n"
    "CRLF line\r\nbare CR\rtab\there \"quoted\" 'single' back\\slash\n"
    "<script>alert('x')</script> <img src=x onerror=alert(1)> &amp; &lt;b&gt;\n"
    "光合作用是植物利用光能合成有机物的过程。日本語のテキスト。한국어 문장.\n"
    "العربية עברית — mixed RTL.\n"
    "Combining: e\u0301 n\u0303 a\u0308; math: ∑ ∫ √2 ≠ ∞\n"
    "Emoji: 🌱🌞 👩🏽‍🔬 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵\n"
    "Line separators: [\u2028] [\u2029] nbsp:[\u00a0] zero-width:[\u200b]\n"
    "End."
)

DEMO_FALLBACK_NOTICE = (
    "No OPENAI_API_KEY or GROQ_API_KEY is set, so the keyless demo provider is "
    "answering. Its text is canned, not written by a language model."
)

NORMAL_ANSWER = (
    "This is the keyless demo provider, so no language model wrote this answer. "
    "It received this request: {request}\n\nA real provider would answer it in "
    "about one hundred words, streamed to you a few words at a time, exactly as "
    "this text is. Set OPENAI_API_KEY or GROQ_API_KEY to get real answers.\n\n"
    "Each piece of this text arrives as its own event, paced like a model, so "
    "the page can show it growing as it is written. The end of the answer is a "
    "separate event that carries the finish reason, the token usage and the time "
    "to the first token."
)


class DemoChatModel(GenericFakeChatModel):
    """GenericFakeChatModel that writes about the question and paces its chunks."""

    messages: Iterator[AIMessage | str] = iter(())
    scenario: Scenario = "normal"
    chunk_delay_seconds: float = 0.04
    pause_seconds: float = 20.0

    @property
    def _llm_type(self) -> str:
        return "qa-service-demo"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # Who answered, as `done` reports it (generation/report.py).
        return LangSmithParams(
            ls_provider="demo", ls_model_name="demo-writer", ls_model_type="chat"
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(self._pieces(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        pieces = self._pieces(messages)
        middle = len(pieces) // 2
        if self.scenario == "slow_first_token":
            await asyncio.sleep(self.pause_seconds)
        for index, piece in enumerate(pieces):
            if index == middle and self.scenario == "error_mid_stream":
                # The same exception a real provider's cut connection raises,
                # so the demo exercises the real error path and code.
                raise httpx.RemoteProtocolError("demo: simulated cut mid-answer")
            if index == middle and self.scenario == "long_silence":
                await asyncio.sleep(self.pause_seconds)
            elif index and self.chunk_delay_seconds:
                await asyncio.sleep(self.chunk_delay_seconds)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                await run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                response_metadata={"finish_reason": "stop", "model_name": "demo-writer"},
                usage_metadata={
                    "input_tokens": _count_words(messages),
                    "output_tokens": len(pieces),
                    "total_tokens": _count_words(messages) + len(pieces),
                },
                chunk_position="last",
            )
        )

    def _pieces(self, messages: list[BaseMessage]) -> list[str]:
        request = _last_human_text(messages)
        if self.scenario == "unicode":
            text = UNICODE_SAMPLE.replace("{request}", request)
            # Fixed-size pieces split grapheme clusters and CRLF pairs across
            # events, as real tokenizers do.
            return [text[i : i + 3] for i in range(0, len(text), 3)]
        text = NORMAL_ANSWER.replace("{request}", request)
        # Leading-space words, the way real tokenizers cut text.
        return re.findall(r"\s*\S+|\s+$", text)


def build_demo_model(chunk_delay_seconds: float, pause_seconds: float) -> Runnable[Any, Any]:
    """The demo model, its scenario chosen per request via `configurable`."""
    model = DemoChatModel(chunk_delay_seconds=chunk_delay_seconds, pause_seconds=pause_seconds)
    return model.configurable_fields(
        scenario=ConfigurableField(id=SCENARIO_CONFIG_KEY, name="Demo scenario")
    )


def _last_human_text(messages: list[BaseMessage]) -> str:
    for message in reversed(messages):
        if message.type == "human":
            return message.text
    return ""


def _count_words(messages: list[BaseMessage]) -> int:
    return sum(len(message.text.split()) for message in messages)
