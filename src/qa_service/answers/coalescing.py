"""QA_COALESCE_MS: runs of text events merged into one, for clients that prefer fewer events.

A page that updates its DOM on every event flickers at token rate. With a
window, the first text of a run is held at most that long while more text
comes, then the run goes as one `Text`: the texts joined, and the seq of the
LAST one, so a client that resumes from it (Last-Event-ID) continues exactly
after the text it has. Anything else (meta, done, error, a connection's own
notice) flushes the run first and passes unchanged. The log keeps every
event as generated; this works on one connection's domain events, so every
dialect can use it before it renders.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

from qa_service.core.events import AnswerEvent, Text
from qa_service.core.readahead import Ended, ReadAhead


async def merge_texts(
    events: AsyncGenerator[AnswerEvent], window_seconds: float
) -> AsyncGenerator[AnswerEvent]:
    """`events`, each run of `Text`s within `window_seconds` of its first sent as one.

    A window of 0 passes every event through as it comes.
    """
    if window_seconds <= 0:
        async with aclosing(events):
            async for event in events:
                yield event
        return
    ahead = ReadAhead(events)
    loop = asyncio.get_running_loop()
    try:
        # The item that ended the last run of text, not yet sent.
        pending: AnswerEvent | Ended | None = None
        while True:
            item = pending if pending is not None else await ahead.get()
            pending = None
            if isinstance(item, Ended):
                if item.error is not None:
                    raise item.error
                return
            if isinstance(item, Text):
                run = [item]
                pending = await _next_text_within(ahead, run, loop.time() + window_seconds)
                yield Text(run[-1].seq, "".join(text.text for text in run))
            else:
                yield item
    finally:
        ahead.close()


async def _next_text_within(
    ahead: ReadAhead[AnswerEvent], run: list[Text], deadline: float
) -> AnswerEvent | Ended | None:
    """Add the texts that come before `deadline` to `run`. Returns the first item
    that is not a text (it ends the run), or None when the window closed."""
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                item = await ahead.get()
        except TimeoutError:
            return None
        if not isinstance(item, Text):
            return item
        run.append(item)
