"""The chat models every request uses: each provider's, with a stream that starts at
the first text, is capped, and batches what is waiting. That first point is what
keeps the fallback provider (providers.py `with_fallback`) to "only before any text".

The fallback is built with LangChain's own `primary.with_fallbacks([fallback])`, on the model,
so each chain stays `prompt | model | parser`. What it does, read in
langchain-core 1.7's `RunnableWithFallbacks.astream` (runnables/fallbacks.py):
it opens each runnable's stream in turn and awaits its first chunk; an
exception from that first `anext()` that is one of `exceptions_to_handle`
moves on to the next runnable, any other (CancelledError among them: it is a
BaseException) is re-raised at once. Once a first chunk has come, it leaves
the loop and yields from that stream alone: a later failure is re-raised,
never retried elsewhere. So the fallback can only ever start before the first
chunk.

Its first chunk is not the first text, though. Both providers open a stream
with a role-only delta whose content is empty, and end it with chunks that
carry only a finish reason or usage. A stream that dies after the role delta
and before any text would not fall back. `TextFirstChatModel` closes that gap: it
holds back empty chunks until a chunk with text comes (then yields them all
in order; chunks that were already waiting together go as one, batching.py),
or the stream ends. The first chunk LangChain sees is
then the first text, so "fall back before any text, never after" holds
exactly (tests/unit/test_fallback.py).

Timing: the writer's first-piece deadline (QA_UPSTREAM_READ_TIMEOUT_SECONDS,
120 s by default) covers the primary's tries and the fallback's together,
because a person is waiting for the first word. A primary that fails fast
costs its retries' waits (the SDKs' backoff of about 0.5 to 8 s, or a
Retry-After up to QA_UPSTREAM_MAX_RETRY_WAIT_SECONDS) and a connect that
hangs costs QA_UPSTREAM_CONNECT_TIMEOUT_SECONDS a try, which leaves the
fallback most of the deadline. A primary that accepts the request and then
stays silent is not fallen back from: its read timeout is that same deadline,
which ends the answer with upstream_timeout first.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, Self, cast

from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.outputs import ChatGenerationChunk
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI
from pydantic import PrivateAttr

from qa_service.generation.batching import batch_waiting, capped, merge_chunks


class TextFirstChatModel(BaseChatModel):
    """A chat model whose stream's first chunk holds text, unless it has none at all.

    Its stream also keeps to the model's `max_tokens` in provider chunks, and
    merges the chunks that are already waiting when it is asked for the next
    (batching.py: under load, the chain's per-chunk cost is paid less often).

    Its settings, as a call reports them to the callbacks (invocation params,
    LangSmith params), are worked out once: the model is built at start-up and
    never changed after, and LangChain rebuilt them (a `model.dict()` among
    them) three times per answer (benchmarks/startup.py). A call with its own
    `stop` or kwargs (an answer's `max_tokens`, bound by writer.py) still gets
    them worked out for it.
    """

    # What each of the two returned for a call with no stop and no kwargs.
    _invocation_params: dict[str, Any] | None = PrivateAttr(default=None)
    _ls_params: LangSmithParams | None = PrivateAttr(default=None)

    def _get_invocation_params(
        self, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        if stop is not None or kwargs:
            return super()._get_invocation_params(stop=stop, **kwargs)
        if self._invocation_params is None:
            self._invocation_params = super()._get_invocation_params()
        # Copies: LangChain adds to what it gets (ls_integration, say).
        return dict(self._invocation_params)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        if stop is not None or kwargs:
            return super()._get_ls_params(stop=stop, **kwargs)
        if self._ls_params is None:
            self._ls_params = super()._get_ls_params()
        return self._ls_params.copy()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        # Pydantic copies private attributes: a copy with other settings
        # would report the original's.
        copy = super().model_copy(update=update, deep=deep)
        copy._invocation_params = None
        copy._ls_params = None
        return copy

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        # Typed AsyncIterator, but an async generator: closed with ours.
        provider = cast(AsyncGenerator[ChatGenerationChunk], super()._astream(*args, **kwargs))
        # ChatOpenAI and ChatGroq both name their output cap max_tokens; an
        # answer's own (a bound kwarg: generation/writer.py) comes in kwargs.
        max_tokens: int | None = kwargs.get("max_tokens", getattr(self, "max_tokens", None))
        chunks = capped(provider, max_tokens)
        handed_over = False
        try:
            # Up to the first text, read in this task: a person waits for it,
            # and under load every hop through the read-ahead task costs a
            # turn of a busy event loop (benchmarks/load.py, TTFT at 100 streams).
            held: list[ChatGenerationChunk] = []
            async for chunk in chunks:
                held.append(chunk)
                if chunk.message.content:
                    break
            for early in held:
                yield early
            # Then the rest, batched (`break` left `chunks` open).
            # The read-ahead task owns `chunks` from here and closes it itself:
            # closing it from here could find it running in that task.
            rest = batch_waiting(chunks, merge_chunks)
            handed_over = True
            async with aclosing(rest):
                async for chunk in rest:
                    yield chunk
        finally:
            if not handed_over:
                await chunks.aclose()


class TextFirstChatOpenAI(TextFirstChatModel, ChatOpenAI):
    """ChatOpenAI whose stream starts at the first text."""


class TextFirstChatGroq(TextFirstChatModel, ChatGroq):
    """ChatGroq whose stream starts at the first text."""
