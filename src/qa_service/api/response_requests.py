"""What a Responses request (`POST /v1/responses`) may say, and its checks: the
body's models, and its `input` as the conversation's turns.

The request is OpenAI's; we act on what a text prompt can answer. Sampling
fields are accepted and ignored, as on every dialect. What no answer could
honour is refused by the body's own types, so /openapi.json promises no more
than is taken: tools, several outputs, background runs, structured output,
non-text parts and items that are not messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from qa_service.answers.model import AnswerRequest
from qa_service.api.asks import checked_history, checked_model, checked_query
from qa_service.api.deps import Service
from qa_service.core import errors
from qa_service.generation.history import Turn

# What a message's content parts may be: text in, text out; nothing else is answerable.
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# What an input item carries besides its text: an Agents SDK's assistant item
# repeats its id, status, type, role and empty annotations and logprobs.
ITEM_OVERHEAD_BYTES = 256


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None


class InputItem(BaseModel):
    """A message item (`type` "message", or left out). Items of other types
    (tool calls and their outputs, reasoning) cannot be answered by a text
    prompt, and are refused."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str | None = None
    role: str | None = None
    content: str | list[ContentPart] | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    # Structured output (json_object, json_schema) cannot be promised by a text prompt.
    type: Literal["text"]


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    format: TextFormat | None = None


class CreateResponseRequest(BaseModel):
    """The fields we act on. Sampling fields (temperature, top_p, reasoning,
    truncation, include, metadata, ...) are accepted and ignored: the
    service's configuration decides them, as it does for /ai_write."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    store: bool | None = True
    previous_response_id: str | None = None
    # Refused by their types where no answer could honour them: background runs
    # (a stored response resumes instead), tools, several outputs.
    background: Literal[False] | None = None
    tools: list[Any] | None = Field(default=None, max_length=0)
    n: Literal[1] | None = None
    text: TextOptions | None = None

    @field_validator("background", "n", mode="before")
    @classmethod
    def _not_an_equal_of_another_type(cls, value: Any, info: ValidationInfo) -> Any:
        # A Literal compares with ==, so False would take 0 and 1 would take true.
        wanted = bool if info.field_name == "background" else int
        if value is not None and (type(value) is not wanted):
            raise ValueError(f"must be {'a boolean' if wanted is bool else 'an integer'}")
        return value


def checked_response(
    service: Service,
    body: CreateResponseRequest,
    earlier: Sequence[Turn] = (),
) -> tuple[AnswerRequest, tuple[Turn, ...]]:
    """The answer the request asks for, and the conversation it sends (what a
    stored response keeps); refused before any upstream call. `earlier`: the
    turns `previous_response_id` continues."""
    prompt = checked_model(service, body.model)
    turns = [*earlier, *_turns_of(body.input)]
    if not turns or turns[-1].role != "user":
        raise errors.invalid_request("input: the last message must be the user's question")
    settings = service.settings
    question = checked_query(turns[-1].content, settings.max_query_chars)
    history = checked_history(turns[:-1], settings)
    cap = body.max_output_tokens
    if cap is not None and settings.max_tokens is not None and cap >= settings.max_tokens:
        cap = None  # QA_MAX_TOKENS already holds it
    answer_request = AnswerRequest(
        question=question,
        prompt=prompt.name,
        configurable={},
        history=history,
        prompt_version=prompt.version,
        max_tokens=cap,
    )
    return answer_request, (*history, Turn("user", question))


def _turns_of(input: str | Sequence[InputItem]) -> list[Turn]:
    if isinstance(input, str):
        return [Turn("user", input)]
    turns = []
    for index, item in enumerate(input):
        if item.type not in (None, "message"):
            raise errors.invalid_request(f"input.{index}: only message items are supported")
        if item.role in ("system", "developer"):
            continue  # left out, and said so (x-qa-ignored-system-messages)
        if item.role == "user":
            turns.append(Turn("user", _text_of(item, index)))
        elif item.role == "assistant":
            turns.append(Turn("assistant", _text_of(item, index)))
        else:
            raise errors.invalid_request(f"input.{index}.role: must be user or assistant")
    return turns


def _text_of(item: InputItem, index: int) -> str:
    content = item.content
    if content is None:
        raise errors.invalid_request(f"input.{index}.content: required")
    if isinstance(content, str):
        return content
    texts = []
    for part_index, part in enumerate(content):
        if part.type not in _TEXT_PARTS or part.text is None:
            raise errors.invalid_request(
                f"input.{index}.content.{part_index}: only text content is supported"
            )
        texts.append(part.text)
    return "".join(texts)


def ignored_system_messages(body: CreateResponseRequest) -> int:
    items = body.input if isinstance(body.input, list) else []
    return (body.instructions is not None) + sum(
        item.role in ("system", "developer") for item in items
    )
