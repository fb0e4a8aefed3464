"""The fallback provider with fake chat models: before any text it answers, after it never does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import reduce
from operator import add
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.language_models import LangSmithParams
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from qa_service.generation.chat_models import TextFirstChatModel
from qa_service.generation.prompts import load_prompts
from qa_service.generation.providers import with_fallback
from qa_service.generation.report import GenerationReport
from qa_service.generation.writer import AIWriter

PROMPTS = load_prompts(Path(__file__).resolve().parents[2] / "prompts")
REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


class StockScriptedModel(GenericFakeChatModel):
    """Streams its script as a provider does: a role-only delta first, then each
    step, a piece of text or an exception to raise. `block` waits for ever."""

    messages: Any = iter(())
    provider: str = "primary-provider"
    script: list[Any] = Field(default_factory=list)
    starts: int = 0
    started: asyncio.Event | None = None

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_provider=self.provider, ls_model_name=f"{self.provider}-model")

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.starts += 1
        if self.started is not None:
            self.started.set()
        yield ChatGenerationChunk(message=AIMessageChunk(content=""))  # the role delta
        for step in self.script:
            if step == "block":
                await asyncio.Event().wait()
            if isinstance(step, BaseException):
                raise step
            yield ChatGenerationChunk(message=AIMessageChunk(content=step))
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata={"finish_reason": "stop"})
        )


class ScriptedModel(TextFirstChatModel, StockScriptedModel):
    """The same, its first chunk the first text: as the service builds its providers."""


def _fallback() -> ScriptedModel:
    return ScriptedModel(provider="fallback-provider", script=["From ", "the fallback."])


def _status_error(kind: type[openai.APIStatusError], status: int) -> openai.APIStatusError:
    return kind("failed", response=httpx.Response(status, request=REQUEST), body=None)


async def _answer(
    primary: ScriptedModel, fallback: ScriptedModel, report: GenerationReport
) -> list[str]:
    writer = AIWriter(with_fallback(primary, fallback), PROMPTS)
    return [piece async for piece in writer.stream("q", prompt="explain", report=report)]


@pytest.mark.parametrize(
    "failure",
    [
        _status_error(openai.InternalServerError, 500),
        _status_error(openai.RateLimitError, 429),
        _status_error(openai.AuthenticationError, 401),
        openai.APIConnectionError(request=REQUEST),
        httpx.ConnectError("refused"),
        # After the role delta but before any text: a stream cut there.
        httpx.RemoteProtocolError("cut"),
    ],
)
async def test_the_fallback_answers_when_the_primary_fails_before_any_text(
    failure: Exception,
) -> None:
    primary, fallback, report = ScriptedModel(script=[failure]), _fallback(), GenerationReport()

    pieces = await _answer(primary, fallback, report)

    assert "".join(pieces) == "From the fallback."
    assert (report.provider, report.model, report.fallback) == (
        "fallback-provider",
        "fallback-provider-model",
        True,
    )
    assert report.finish_reason == "stop"


async def test_the_primary_that_answers_is_reported_and_the_fallback_never_asked() -> None:
    primary = ScriptedModel(script=["From ", "the primary."])
    fallback, report = _fallback(), GenerationReport()

    pieces = await _answer(primary, fallback, report)

    assert "".join(pieces) == "From the primary."
    assert (report.provider, report.fallback) == ("primary-provider", False)
    assert fallback.starts == 0


async def test_a_failure_after_text_has_been_sent_never_falls_back() -> None:
    primary = ScriptedModel(script=["Half an ", httpx.RemoteProtocolError("cut")])
    fallback, report = _fallback(), GenerationReport()
    pieces: list[str] = []

    async def read() -> None:
        writer = AIWriter(with_fallback(primary, fallback), PROMPTS)
        async for piece in writer.stream("q", prompt="explain", report=report):
            pieces.append(piece)

    with pytest.raises(httpx.RemoteProtocolError):
        await read()

    assert pieces == ["Half an "]
    assert fallback.starts == 0
    assert (report.provider, report.fallback) == ("primary-provider", False)


@pytest.mark.parametrize(
    "failure",
    [
        _status_error(openai.BadRequestError, 400),
        _status_error(openai.UnprocessableEntityError, 422),
        # An error object inside an open stream: about this request, not the provider.
        openai.APIError("in-stream error", request=REQUEST, body=None),
    ],
)
async def test_a_request_the_fallback_would_refuse_too_does_not_fall_back(
    failure: Exception,
) -> None:
    primary, fallback = ScriptedModel(script=[failure]), _fallback()

    with pytest.raises(type(failure)):
        await _answer(primary, fallback, GenerationReport())

    assert fallback.starts == 0


async def test_when_the_fallback_fails_too_the_primarys_error_is_raised() -> None:
    primary = ScriptedModel(script=[_status_error(openai.InternalServerError, 503)])
    fallback = ScriptedModel(provider="fallback-provider", script=[httpx.ConnectError("down")])

    with pytest.raises(openai.InternalServerError):
        await _answer(primary, fallback, GenerationReport())

    assert fallback.starts == 1


async def test_cancelling_while_the_primary_waits_does_not_start_the_fallback() -> None:
    started = asyncio.Event()
    primary = ScriptedModel(script=["block"], started=started)
    fallback = _fallback()
    answer = asyncio.create_task(_answer(primary, fallback, GenerationReport()))
    await started.wait()

    answer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answer

    assert fallback.starts == 0


async def test_stock_first_chunk_rule_would_miss_a_cut_after_the_role_delta() -> None:
    """Why TextFirstChatModel exists: without it, the empty role delta counts as
    the first chunk, and a stream cut before any text does not fall back."""
    primary = StockScriptedModel(script=[httpx.RemoteProtocolError("cut")])

    with pytest.raises(httpx.RemoteProtocolError):
        await _answer(primary, _fallback(), GenerationReport())


async def test_text_first_holds_empty_chunks_back_and_says_what_every_chunk_said() -> None:
    model = ScriptedModel(script=["a", "", "b"])
    plain = StockScriptedModel(script=["a", "", "b"])

    held = [chunk async for chunk in model.astream("q")]
    stock = [chunk async for chunk in plain.astream("q")]

    # Up to the first text, chunk for chunk; after it, chunks that were waiting
    # together may be merged (generation/batching.py), never reordered.
    assert [chunk.content for chunk in held[:2]] == ["", "a"]
    merged, expected = reduce(add, held), reduce(add, stock)
    assert merged.content == expected.content == "ab"
    assert merged.response_metadata == expected.response_metadata


async def test_text_first_yields_an_answer_without_text_at_its_end() -> None:
    model = ScriptedModel(script=[])

    chunks = [chunk async for chunk in model.astream("q")]

    assert not any(c.content for c in chunks)
    assert reduce(add, chunks).response_metadata.get("finish_reason") == "stop"
