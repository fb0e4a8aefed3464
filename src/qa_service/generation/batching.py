"""Adaptive batching below the chain: upstream chunks already waiting go up as one.

Every chunk a chat model yields pays LangChain's per-chunk layers above it
(a callback per token, one generator step per chain step, the parser), then
our own (a log append, a wire event). Under load the event loop falls behind
the sockets, so one network read brings several of a stream's chunks at once.
Those are merged into one chunk here, so the per-chunk cost is paid less
often exactly when the CPU is short. Nothing ever waits for a chunk that has
not arrived: a pump task reads the upstream as fast as it comes and queues
each chunk; the reader takes whatever is queued the moment it asks. At low
load that is one chunk, at once, as before (benchmarks/load.py, scenario (a),
shows the latency; tests/unit/test_batching.py the behaviour).

The pump also owns the upstream's reads: when the reader stops (the answer is
done, cut at its cap, or cancelled) the pump is cancelled inside its network
read, where the SDKs close their responses; AnswerUpstream (upstream.py)
closes any that escaped.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from functools import reduce
from operator import add
from typing import TypeVar, cast

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from qa_service.core.readahead import Ended, ReadAhead

T = TypeVar("T")


async def batch_waiting(
    source: AsyncGenerator[T], merge: Callable[[Sequence[T]], T]
) -> AsyncGenerator[T]:
    """`source`'s items, each run of items that were already waiting merged into one.

    Order and content are kept (`merge` must keep them); an exception from
    `source` is raised after the items that came before it.
    """
    ahead = ReadAhead(source)
    try:
        while True:
            batch = [await ahead.get(), *ahead.waiting()]
            ended: Ended | None = None
            last = batch[-1]
            if isinstance(last, Ended):
                ended = last
                batch.pop()
            items = cast(list[T], batch)  # only the last one could be Ended
            if items:
                yield merge(items)
            if ended is not None:
                if ended.error is not None:
                    raise ended.error
                return
    finally:
        ahead.close()


def merge_chunks(chunks: Sequence[ChatGenerationChunk]) -> ChatGenerationChunk:
    """One chunk that says what `chunks` said, in order.

    Plain text deltas (the common case under load) are joined directly; any
    chunk with more to it (a finish reason, usage, tool calls) is merged with
    LangChain's own `+`, the same reduction it applies to build the final message.
    """
    if len(chunks) == 1:
        return chunks[0]
    if all(_plain_text(chunk) for chunk in chunks):
        first = chunks[0].message
        # str: _plain_text checked it.
        text = "".join(cast(str, chunk.message.content) for chunk in chunks)
        return ChatGenerationChunk(message=AIMessageChunk(content=text, id=first.id))
    return reduce(add, chunks)


def _plain_text(chunk: ChatGenerationChunk) -> bool:
    message = chunk.message
    return (
        not chunk.generation_info
        and isinstance(message, AIMessageChunk)
        and isinstance(message.content, str)
        and not message.response_metadata
        and not message.additional_kwargs
        and not message.tool_call_chunks
        and message.usage_metadata is None
    )


async def capped(
    chunks: AsyncGenerator[ChatGenerationChunk], max_texts: int | None
) -> AsyncGenerator[ChatGenerationChunk]:
    """`chunks`, ended after `max_texts` chunks with text, as a provider that
    keeps to its cap ends: the next text is dropped, and a chunk with
    finish_reason "length" and no usage ends the stream.

    It counts the provider's own chunks (each holds at least one token), so
    it runs before batching; a provider that keeps to the cap is never cut.
    """
    texts = 0
    async with aclosing(chunks):
        async for chunk in chunks:
            if chunk.message.content:
                if max_texts is not None and texts == max_texts:
                    yield ChatGenerationChunk(
                        message=AIMessageChunk(content=""),
                        generation_info={"finish_reason": "length"},
                    )
                    return
                texts += 1
            yield chunk
