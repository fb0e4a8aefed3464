"""A whole answer for a client that asked for no stream (`stream: false`): wait for
its end, and stop it when the client leaves first."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import anyio
from starlette.requests import Request

from qa_service.api.opening import OpenedAnswer, cancel_on_disconnect
from qa_service.core import errors
from qa_service.core.errors import PublicError
from qa_service.core.events import AnswerEvent, AnswerSummary, Done, Failed, Text


async def whole_answer(
    opened: OpenedAnswer, request: Request
) -> tuple[str, AnswerSummary] | PublicError:
    """The answer's text and summary, or its public error: errors.CANCELLED
    when the client left before the end (its answer is then stopped)."""
    outcome: list[tuple[str, AnswerSummary] | PublicError] = []
    async with anyio.create_task_group() as group:
        group.start_soon(cancel_on_disconnect, request, group.cancel_scope)
        outcome.append(await _collected(opened.events))
        group.cancel_scope.cancel()
    # Empty: the client left, and its answer was stopped; nobody reads this.
    return outcome[0] if outcome else errors.CANCELLED


async def _collected(
    events: AsyncGenerator[AnswerEvent],
) -> tuple[str, AnswerSummary] | PublicError:
    pieces: list[str] = []
    async with aclosing(events):
        async for event in events:
            match event:
                case Text(_, text):
                    pieces.append(text)
                case Done(_, summary):
                    return "".join(pieces), summary
                case Failed(_, error):
                    return error
    return errors.INTERNAL  # a log always ends with done or error
