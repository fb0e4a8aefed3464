"""QA_COALESCE_MS over domain events: runs of text merged, the last seq kept, nothing lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from qa_service.answers.coalescing import merge_texts
from qa_service.core.errors import CANCELLED
from qa_service.core.events import AnswerEvent, AnswerMeta, AnswerSummary, Done, Failed, Meta, Text

# A guard, not a measurement.
DEADLINE = 5.0
META = Meta(0, AnswerMeta(request_id="r", provider="p", model="m", prompt="explain"))
DONE = Done(4, AnswerSummary("stop", None, 1.0, 6, 2.0))


async def _all_at_once(*events: AnswerEvent) -> AsyncGenerator[AnswerEvent]:
    for event in events:
        yield event


async def _read(events: AsyncGenerator[AnswerEvent]) -> list[AnswerEvent]:
    async with asyncio.timeout(DEADLINE):
        return [event async for event in events]


async def test_a_run_of_texts_goes_as_one_with_the_last_seq() -> None:
    source = _all_at_once(META, Text(1, "a\r\n"), Text(2, "糖"), Text(3, "🌱"), DONE)

    out = await _read(merge_texts(source, 10.0))

    assert out == [META, Text(3, "a\r\n糖🌱"), DONE]


async def test_without_a_window_every_event_passes_as_it_is() -> None:
    events = [META, Text(1, "a"), Text(2, "b"), DONE]

    assert await _read(merge_texts(_all_at_once(*events), 0.0)) == events


async def test_a_text_is_held_no_longer_than_the_window() -> None:
    later = asyncio.Event()

    async def paced() -> AsyncGenerator[AnswerEvent]:
        yield Text(1, "first")
        await later.wait()
        yield Text(2, "second")

    merged = merge_texts(paced(), 0.05)
    async with asyncio.timeout(DEADLINE):
        # "second" never comes while the window is open: "first" goes alone.
        assert await anext(merged) == Text(1, "first")
        later.set()
        assert await anext(merged) == Text(2, "second")
        await merged.aclose()


async def test_a_failure_comes_after_the_text_before_it() -> None:
    async def failing() -> AsyncGenerator[AnswerEvent]:
        yield Text(1, "half")
        raise ConnectionResetError

    merged = merge_texts(failing(), 10.0)
    async with asyncio.timeout(DEADLINE):
        assert await anext(merged) == Text(1, "half")
        with pytest.raises(ConnectionResetError):
            await anext(merged)


async def test_an_error_event_ends_the_run_and_passes_unchanged() -> None:
    failed = Failed(3, CANCELLED)
    source = _all_at_once(Text(1, "a"), Text(2, "b"), failed)

    assert await _read(merge_texts(source, 10.0)) == [Text(2, "ab"), failed]


async def test_closing_the_reader_closes_the_events() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncGenerator[AnswerEvent]:
        try:
            yield Text(1, "a")
            await asyncio.Event().wait()
            yield Text(2, "never")
        finally:
            closed.set()

    merged = merge_texts(endless(), 0.01)
    async with asyncio.timeout(DEADLINE):
        assert await anext(merged) == Text(1, "a")
        await merged.aclose()
        await closed.wait()
