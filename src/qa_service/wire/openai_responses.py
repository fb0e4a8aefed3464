"""The OpenAI Responses dialect: an answer's events as `response.*` stream events.

The shapes are OpenAI's own (https://platform.openai.com/docs/api-reference/responses-streaming),
as the Open Responses specification types them. One answer is one response
with one output message holding one `output_text` part:

    seq 0 (meta)      0 response.created, 1 response.in_progress,
                      2 response.output_item.added, 3 response.content_part.added
    seq s (text)      s+3 response.output_text.delta
    seq f (done)      f+3 response.output_text.done, f+4 response.content_part.done,
                      f+5 response.output_item.done,
                      f+6 response.completed, or response.incomplete (cut at the cap)
    seq f (error)     f+3 response.failed (a cancelled answer's status is `cancelled`)

So every event's `sequence_number` is a function of the answer's log alone:
the same on every replica, and a resume after any number (`starting_after`)
reads the log after the event that rendered it (`log_position`). Texts merged by
QA_COALESCE_MS keep their last seq (answers/coalescing.py), so the numbers
stay strictly increasing, with gaps, as OpenAI's own clients accept.

Each event is `event: <type>` and `data: {...}`, with no `id:` line (the
official SDK's parser trips on a comment after one: wire/openai_chat.py) and
no `[DONE]`: the terminal event ends the stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from sse_starlette import ServerSentEvent

from qa_service.core.errors import CANCELLED, PublicError
from qa_service.core.events import AnswerEvent, AnswerSummary, Done, Failed, Meta, Text
from qa_service.wire.sse import LINE_SEPARATOR, encode_json

# The numbers the opening (meta) takes: created, in_progress, item and part added.
OPENING_EVENTS = 4
# The numbers a completed answer's ending takes: text, part and item done, completed.
ENDING_EVENTS = 4
# A text at log seq s is number s + TEXT_OFFSET; the ending at seq f starts at f + TEXT_OFFSET.
TEXT_OFFSET = OPENING_EVENTS - 1
# Why an answer cut short is incomplete, by its finish_reason.
_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(frozen=True, slots=True)
class ResponseFacts:
    """What every event of one response repeats (a stored response's record has them)."""

    id: str
    item_id: str
    created_at: int
    model: str
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    store: bool = True
    # The service's sampling (QA_TEMPERATURE), which a request does not change.
    temperature: float = 1.0


def log_position(starting_after: int, final_seq: int | None) -> int:
    """The log seq to read after, for a resume after number `starting_after`.

    Exactly the seq of the text that number is, so a run of texts merged on
    the way out (QA_COALESCE_MS) never holds one the client has. Within the
    opening or the ending, the seq before that group: it is rendered again,
    and its numbers up to `starting_after` are not sent (render_stream).
    """
    position = max(-1, starting_after - TEXT_OFFSET)
    if final_seq is not None and position >= final_seq:
        return final_seq - 1
    return position


def last_number(final: AnswerEvent) -> int:
    """The number of the last event an answer's final event (Done or Failed) renders."""
    return final.seq + TEXT_OFFSET + (ENDING_EVENTS - 1 if isinstance(final, Done) else 0)


def usage_of(summary: AnswerSummary) -> dict[str, Any] | None:
    """The provider's token counts in the Responses shape; None when it gave none."""
    if summary.usage is None:
        return None
    return {
        "input_tokens": summary.usage["input_tokens"],
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": summary.usage["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": summary.usage["total_tokens"],
    }


def error_of(public: PublicError) -> dict[str, str]:
    """A failed response's `error`: our stable code and its public message."""
    return {"code": public.code, "message": public.message}


@dataclass(slots=True)
class ResponseState:
    """One response as its log has gone so far: rendered into objects and events."""

    facts: ResponseFacts
    pieces: list[str] = field(default_factory=list)
    # Set by the ending: status, and what goes with it.
    status: str = "in_progress"
    summary: AnswerSummary | None = None
    error: PublicError | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def take(self, event: AnswerEvent) -> None:
        """Move the state on by one of the answer's events."""
        match event:
            case Text(_, text):
                self.pieces.append(text)
            case Done(_, summary):
                self.summary = summary
                reason = _INCOMPLETE_REASONS.get(summary.finish_reason or "")
                self.status = "incomplete" if reason else "completed"
            case Failed(_, error):
                self.error = error
                self.status = "cancelled" if error.code == CANCELLED.code else "failed"
            case Meta():
                pass

    def response(self) -> dict[str, Any]:
        """The whole `response` object, as it stands."""
        facts = self.facts
        summary = self.summary
        reason = _INCOMPLETE_REASONS.get(summary.finish_reason or "") if summary else None
        return {
            "id": facts.id,
            "object": "response",
            "created_at": facts.created_at,
            # When its answer ended, as the answer's own duration says (the
            # same on every replica); null while it runs and after a failure.
            "completed_at": (
                facts.created_at + round(summary.duration_ms / 1000) if summary else None
            ),
            "status": self.status,
            "background": False,
            "error": error_of(self.error) if self.error is not None else None,
            "incomplete_details": {"reason": reason} if reason else None,
            "instructions": None,
            "max_output_tokens": facts.max_output_tokens,
            "max_tool_calls": None,
            "model": facts.model,
            "output": [self.item()] if self.status != "in_progress" or self.pieces else [],
            "parallel_tool_calls": False,
            "previous_response_id": facts.previous_response_id,
            "reasoning": None,
            "store": facts.store,
            "temperature": facts.temperature,
            "top_p": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "top_logprobs": 0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "none",
            "tools": [],
            "truncation": "disabled",
            "service_tier": "default",
            "usage": usage_of(summary) if summary is not None else None,
            "user": None,
            "metadata": {},
            "safety_identifier": None,
            "prompt_cache_key": None,
        }

    def item(self, text: str | None = None) -> dict[str, Any]:
        """The one output message; `text` "" for the empty one the stream opens with."""
        shown = self.text if text is None else text
        return {
            "type": "message",
            "id": self.facts.item_id,
            "status": self._item_status(),
            "role": "assistant",
            "content": [self.part(shown)] if text is None else [],
        }

    def part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _item_status(self) -> str:
        if self.status == "in_progress":
            return "in_progress"
        return "completed" if self.status == "completed" else "incomplete"


def render(state: ResponseState, event: AnswerEvent) -> list[tuple[int, dict[str, Any]]]:
    """One of the answer's events as this dialect's events, each with its number;
    `state` moves on by it."""
    state.take(event)
    where = {"item_id": state.facts.item_id, "output_index": 0, "content_index": 0}
    match event:
        case Meta():
            response = state.response()
            return [
                (0, {"type": "response.created", "response": response}),
                (1, {"type": "response.in_progress", "response": response}),
                (
                    2,
                    {
                        "type": "response.output_item.added",
                        "output_index": 0,
                        "item": state.item(text=""),
                    },
                ),
                (3, {"type": "response.content_part.added", **where, "part": state.part("")}),
            ]
        case Text(seq, text):
            return [
                (
                    seq + TEXT_OFFSET,
                    {"type": "response.output_text.delta", **where, "delta": text, "logprobs": []},
                )
            ]
        case Done(seq, _):
            first = seq + TEXT_OFFSET
            ending = "response.completed" if state.status == "completed" else "response.incomplete"
            return [
                (
                    first,
                    {
                        "type": "response.output_text.done",
                        **where,
                        "text": state.text,
                        "logprobs": [],
                    },
                ),
                (
                    first + 1,
                    {"type": "response.content_part.done", **where, "part": state.part(state.text)},
                ),
                (
                    first + 2,
                    {"type": "response.output_item.done", "output_index": 0, "item": state.item()},
                ),
                (first + 3, {"type": ending, "response": state.response()}),
            ]
        case Failed(seq, _):
            return [(seq + TEXT_OFFSET, {"type": "response.failed", "response": state.response()})]


def _event(number: int, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(
        encode_json({**data, "sequence_number": number}), event=data["type"], sep=LINE_SEPARATOR
    )


async def render_stream(
    events: AsyncGenerator[AnswerEvent], state: ResponseState, starting_after: int = -1
) -> AsyncGenerator[ServerSentEvent]:
    """The stream of `events`; only the numbers after `starting_after` are sent."""
    async with aclosing(events):
        async for event in events:
            for number, data in render(state, event):
                if number > starting_after:
                    yield _event(number, data)
