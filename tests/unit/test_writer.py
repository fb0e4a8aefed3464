"""AIWriter with LangChain's fake chat models: no server, no network."""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    FakeListChatModelError,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.output_parsers import StrOutputParser
from langchain_core.output_parsers.transform import BaseTransformOutputParser
from langchain_core.outputs import ChatGenerationChunk

from qa_service.generation.demo import SCENARIO_CONFIG_KEY, build_demo_model
from qa_service.generation.prompts import load_prompts
from qa_service.generation.report import GenerationReport
from qa_service.generation.writer import AIWriter, GenerationLimits, InlineStrOutputParser

PROMPTS = load_prompts(Path(__file__).resolve().parents[2] / "prompts")


async def _collect(writer: AIWriter, question: str, **kwargs: object) -> list[str]:
    return [chunk async for chunk in writer.stream(question, prompt="explain", **kwargs)]  # type: ignore[arg-type]


async def test_streams_the_models_text_exactly_in_pieces() -> None:
    text = 'Photosynthesis\r\nturns light\tinto 糖 🌱 <b>&amp;</b> \\ "done"'
    writer = AIWriter(GenericFakeChatModel(messages=iter([AIMessage(content=text)])), PROMPTS)

    chunks = await _collect(writer, "photosynthesis")

    assert "".join(chunks) == text
    assert len(chunks) > 5
    assert all(chunks)


async def test_model_failure_propagates_to_the_caller() -> None:
    writer = AIWriter(FakeListChatModel(responses=["x"], error_on_chunk_number=0), PROMPTS)

    with pytest.raises(FakeListChatModelError):
        await _collect(writer, "q")


class _ReportingModel(GenericFakeChatModel):
    """Ends as a provider does: a last chunk with the finish reason and the usage."""

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for piece in ("Tides ", "rise."):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                response_metadata={"finish_reason": "length"},
                usage_metadata={"input_tokens": 31, "output_tokens": 7, "total_tokens": 38},
                chunk_position="last",
            )
        )


async def test_report_collects_finish_reason_and_usage() -> None:
    writer = AIWriter(_ReportingModel(messages=iter(())), PROMPTS)
    report = GenerationReport()

    chunks = await _collect(writer, "tides", report=report)

    assert chunks == ["Tides ", "rise."]
    assert report == GenerationReport(
        finish_reason="length",
        usage={"input_tokens": 31, "output_tokens": 7, "total_tokens": 38},
        # LangChain's ls_provider for a model class it does not know: its name.
        provider="_reportingmodel",
    )


async def test_report_stays_empty_when_the_model_gives_no_finish_reason() -> None:
    writer = AIWriter(GenericFakeChatModel(messages=iter(["a b"])), PROMPTS)
    report = GenerationReport()

    await _collect(writer, "q", report=report)

    assert (report.finish_reason, report.usage) == (None, None)


async def test_the_prompt_is_chosen_by_name() -> None:
    writer = AIWriter(build_demo_model(0, 0), PROMPTS)

    chunks = [c async for c in writer.stream("tides", prompt="eli5")]

    assert "ten-year-old" in "".join(chunks)
    assert writer.prompt_names == sorted(PROMPTS)


async def test_demo_scenarios_are_chosen_per_call() -> None:
    writer = AIWriter(build_demo_model(0, 0), PROMPTS)

    normal = "".join(await _collect(writer, "q"))
    unicode = "".join(await _collect(writer, "q", configurable={SCENARIO_CONFIG_KEY: "unicode"}))

    assert "🌱" not in normal
    assert "🌱" in unicode
    assert "".join(await _collect(writer, "q")) == normal


async def test_demo_error_scenario_raises_after_some_text() -> None:
    writer = AIWriter(build_demo_model(0, 0), PROMPTS)
    seen: list[str] = []

    async def read_all() -> None:
        config = {SCENARIO_CONFIG_KEY: "error_mid_stream"}
        async for chunk in writer.stream("q", prompt="explain", configurable=config):
            seen.append(chunk)

    with pytest.raises(httpx.RemoteProtocolError, match="simulated cut"):
        await read_all()
    assert len(seen) > 5


class _EndlessModel(GenericFakeChatModel):
    """Streams forever, as a provider that ignores max_tokens does."""

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        while True:
            await asyncio.sleep(0)
            yield ChatGenerationChunk(message=AIMessageChunk(content="more "))


async def test_the_cap_stops_the_stream_and_reports_length() -> None:
    report = GenerationReport()
    writer = AIWriter(_EndlessModel(messages=iter(())), PROMPTS, GenerationLimits(max_pieces=7))

    chunks = await _collect(writer, "q", report=report)

    assert chunks == ["more "] * 7
    assert report.finish_reason == "length"


class _CapRecordingModel(_EndlessModel):
    """Streams forever, and notes the output cap each call was asked for."""

    caps: ClassVar[list[object]] = []

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        self.caps.append(kwargs.get("max_tokens"))
        async for chunk in super()._astream(*args, **kwargs):
            yield chunk


async def test_an_answers_lower_cap_is_asked_of_the_model_and_kept_to() -> None:
    model = _CapRecordingModel(messages=iter(()))
    _CapRecordingModel.caps = []
    writer = AIWriter(model, PROMPTS, GenerationLimits(max_pieces=7))
    report = GenerationReport()

    capped = await _collect(writer, "q", report=report, max_tokens=3)
    uncapped = await _collect(writer, "q")
    # A request's cap above the process's changes nothing: the lower one holds.
    above = await _collect(writer, "q", max_tokens=50)

    assert capped == ["more "] * 3
    assert report.finish_reason == "length"
    assert uncapped == above == ["more "] * 7
    assert model.caps == [3, None, 50]


@contextmanager
def _abandoned_async_generators() -> Iterator[list[str]]:
    """The async generators dropped while suspended, never closed: the names of
    those that reach the event loop's finalizer hook, which closes them later."""
    abandoned: list[str] = []
    hooks = sys.get_asyncgen_hooks()

    def finalizer(agen: AsyncGenerator[Any]) -> None:
        abandoned.append(agen.__qualname__)
        if hooks.finalizer is not None:
            hooks.finalizer(agen)

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    try:
        yield abandoned
    finally:
        sys.set_asyncgen_hooks(*hooks)


async def test_a_reader_that_stops_early_closes_the_chain_stream_it_opened() -> None:
    # LangChain leaves its own nested generators to the finalizer (the HTTP
    # response below them is closed by the answer, upstream.py); the chain's
    # stream the writer opened, it closes itself.
    writer = AIWriter(_EndlessModel(messages=iter(())), PROMPTS)
    with _abandoned_async_generators() as abandoned:
        stream = writer.stream("q", prompt="explain")
        assert [await anext(stream) for _ in range(3)] == ["more "] * 3
        await stream.aclose()

    assert "RunnableSequence.astream" not in abandoned
    assert "AIWriter.stream" not in abandoned


class _ThreadRecordingParser(InlineStrOutputParser):
    threads: set[int] = set()  # noqa: RUF012 - a test probe, written by parse_result

    def parse_result(self, result: Any, *, partial: bool = False) -> str:
        self.threads.add(threading.get_ident())
        return super().parse_result(result, partial=partial)


async def test_the_inline_parser_gives_the_stock_parsers_chunks_without_a_thread_hop() -> None:
    text = 'Photosynthesis\r\nturns light\tinto 糖 🌱 <b>&amp;</b> \\ "done"'
    template = PROMPTS["explain"].template
    stock = template | GenericFakeChatModel(messages=iter([text])) | StrOutputParser()
    inline_parser = _ThreadRecordingParser()
    inline = template | GenericFakeChatModel(messages=iter([text])) | inline_parser

    expected = [chunk async for chunk in stock.astream({"concept": "q"})]
    chunks = [chunk async for chunk in inline.astream({"concept": "q"})]

    assert chunks == expected
    assert inline_parser.threads == {threading.get_ident()}


def test_the_method_the_inline_parser_overrides_is_still_the_one_langchain_streams_through() -> (
    None
):
    # A rename upstream would leave the override silently unused.
    base = inspect.signature(BaseTransformOutputParser._atransform)
    assert list(base.parameters) == ["self", "input"]
    assert StrOutputParser._atransform is BaseTransformOutputParser._atransform
