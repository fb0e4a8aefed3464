"""Adaptive batching below the chain, with scripted sources and fake chat models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from functools import reduce
from operator import add
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from qa_service.generation.batching import batch_waiting, capped, merge_chunks
from qa_service.generation.chat_models import TextFirstChatModel
from qa_service.generation.prompts import load_prompts
from qa_service.generation.report import GenerationReport
from qa_service.generation.writer import AIWriter
from tests.unit.test_fallback import StockScriptedModel

PROMPTS = load_prompts(Path(__file__).resolve().parents[2] / "prompts")
# A guard, not a measurement: no step here should take anywhere near this long.
DEADLINE = 5.0


def _text(text: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(content=text))


def _join(chunks: list[str]) -> str:
    return "".join(chunks)


async def _arrived_together(items: list[str]) -> AsyncGenerator[str]:
    """Every item at once, as one network read brings several chunks."""
    for item in items:
        yield item


async def test_chunks_that_are_already_waiting_go_up_as_one() -> None:
    items = ["a", "\r\n", "糖", "🌱", ""]
    merged = batch_waiting(_arrived_together(items), _join)

    async with asyncio.timeout(DEADLINE):
        out = [item async for item in merged]

    assert out == ["a\r\n糖🌱"]


async def test_a_chunk_that_has_not_arrived_is_never_waited_for() -> None:
    arrived = asyncio.Event()

    async def slow() -> AsyncGenerator[str]:
        yield "first"
        await arrived.wait()
        yield "second"

    merged = batch_waiting(slow(), _join)
    async with asyncio.timeout(DEADLINE):
        # Handed over while "second" has not come: nothing holds "first" back.
        assert await anext(merged) == "first"
        arrived.set()
        assert await anext(merged) == "second"
        with pytest.raises(StopAsyncIteration):
            await anext(merged)


async def test_a_failure_is_raised_after_the_chunks_before_it() -> None:
    async def failing() -> AsyncGenerator[str]:
        yield "half "
        yield "an answer"
        raise ConnectionResetError("cut")

    merged = batch_waiting(failing(), _join)
    async with asyncio.timeout(DEADLINE):
        assert await anext(merged) == "half an answer"
        with pytest.raises(ConnectionResetError):
            await anext(merged)


async def test_a_reader_that_stops_ends_the_upstream_read() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncGenerator[str]:
        try:
            yield "one"
            await asyncio.Event().wait()  # the network, silent
            yield "never"
        finally:
            closed.set()

    merged = batch_waiting(endless(), _join)
    async with asyncio.timeout(DEADLINE):
        assert await anext(merged) == "one"
        await merged.aclose()
        await closed.wait()


async def test_a_cancelled_reader_ends_the_upstream_read() -> None:
    closed = asyncio.Event()
    reading = asyncio.Event()

    async def silent() -> AsyncGenerator[str]:
        try:
            reading.set()
            await asyncio.Event().wait()
            yield "never"
        finally:
            closed.set()

    async def read() -> list[str]:
        return [item async for item in batch_waiting(silent(), _join)]

    task = asyncio.create_task(read())
    async with asyncio.timeout(DEADLINE):
        await reading.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await closed.wait()


def test_merged_chunks_keep_text_finish_reason_and_usage() -> None:
    chunks = [
        ChatGenerationChunk(message=AIMessageChunk(content="")),  # the role delta
        _text("Tides "),
        _text("rise."),
        ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata={"finish_reason": "stop"}),
            generation_info={"finish_reason": "stop"},
        ),
        ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
            )
        ),
    ]

    merged = merge_chunks(chunks)

    assert merged.message.content == "Tides rise."
    assert merged.generation_info == {"finish_reason": "stop"}
    assert merged.message.response_metadata == {"finish_reason": "stop"}
    assert isinstance(merged.message, AIMessageChunk)
    assert merged.message.usage_metadata == {
        "input_tokens": 3,
        "output_tokens": 2,
        "total_tokens": 5,
    }


def test_merging_plain_text_gives_what_langchain_merging_gives() -> None:
    chunks = [_text(t) for t in ("a", "\u2028", "e\u0301", " 👩\u200d🔬")]

    assert merge_chunks(chunks).message.content == reduce(add, chunks).message.content


async def _scripted(*contents: str) -> AsyncGenerator[ChatGenerationChunk]:
    for content in contents:
        yield _text(content)
    yield ChatGenerationChunk(message=AIMessageChunk(content=""), generation_info={"x": "end"})


async def test_the_cap_counts_the_providers_own_chunks_and_ends_with_length() -> None:
    out = [chunk async for chunk in capped(_scripted("a", "", "b", "c", "d"), 2)]

    assert [c.message.content for c in out] == ["a", "", "b", ""]
    assert out[-1].generation_info == {"finish_reason": "length"}


async def test_an_answer_exactly_at_the_cap_is_not_cut() -> None:
    out = [chunk async for chunk in capped(_scripted("a", "b"), 2)]

    assert [c.message.content for c in out] == ["a", "b", ""]
    assert out[-1].generation_info == {"x": "end"}


class _ProviderBurst(StockScriptedModel):
    """Streams its script as one network read would bring it: every chunk at once,
    ending as a provider ends, with a finish reason and then usage."""

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content=""))
        for step in self.script:
            yield _text(step)
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata={"finish_reason": "stop"}),
            generation_info={"finish_reason": "stop"},
        )
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata={"input_tokens": 9, "output_tokens": 4, "total_tokens": 13},
            )
        )


class _CoalescingBurst(TextFirstChatModel, _ProviderBurst):
    max_tokens: int | None = None


async def test_through_the_chain_a_burst_arrives_as_fewer_pieces_exactly() -> None:
    script = ["Tides ", "rise\r\n", " and 🌊", " fall."]
    report = GenerationReport()
    writer = AIWriter(_CoalescingBurst(script=script), PROMPTS)

    async with asyncio.timeout(DEADLINE):
        pieces = [p async for p in writer.stream("q", prompt="explain", report=report)]

    # The first text goes as it comes; the rest, waiting together, as one.
    assert pieces == [script[0], "".join(script[1:])]
    assert report.finish_reason == "stop"
    assert report.usage == {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}


async def test_through_the_chain_the_cap_cuts_a_burst_at_the_providers_chunk() -> None:
    report = GenerationReport()
    model = _CoalescingBurst(script=[f"t{n} " for n in range(50)], max_tokens=7)
    writer = AIWriter(model, PROMPTS)

    async with asyncio.timeout(DEADLINE):
        pieces = [p async for p in writer.stream("q", prompt="explain", report=report)]

    assert "".join(pieces) == "".join(f"t{n} " for n in range(7))
    assert report.finish_reason == "length"
    assert report.usage is None
