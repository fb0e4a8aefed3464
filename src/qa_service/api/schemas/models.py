"""The schema models /openapi.json names: the error shape, the events, the plain bodies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qa_service.core.events import AnswerMeta, AnswerSummary

REF = "#/components/schemas/{model}"
# What a route declares as `responses=`: status -> OpenAPI response object.
Responses = dict[int | str, dict[str, Any]]


def ref(model: str) -> dict[str, str]:
    return {"$ref": REF.format(model=model)}


def add_models(components: dict[str, Any], models: Iterable[type[BaseModel]]) -> None:
    """Each model's JSON schema, and the schemas it nests, as named components."""
    for model in models:
        model_schema = model.model_json_schema(ref_template=REF)
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema


class ErrorDetail(BaseModel):
    """A stable `code` to program against, a `message` safe to show, and whether to retry."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(examples=["query_required"])
    message: str = Field(examples=["The query is missing or blank."])
    retryable: bool
    retry_after_seconds: float | None = Field(
        default=None, description="Present when the provider said how long to wait."
    )


class ErrorBody(BaseModel):
    """A refusal before the stream starts, and the last event of a failed stream."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class MetaEvent(BaseModel):
    """First event of every stream: who is answering."""

    model_config = ConfigDict(extra="forbid")

    meta: AnswerMeta


class TextEvent(BaseModel):
    """The next piece of the answer; join them all, in order, for the exact text."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)


class DoneEvent(BaseModel):
    """Last event of a complete answer."""

    model_config = ConfigDict(extra="forbid")

    done: AnswerSummary


class CancelResult(BaseModel):
    """What `POST /answers/{answer_id}/cancel` did."""

    answer_id: str
    status: str = Field(
        description="`cancelled`: it was generating and is being stopped; "
        "`finished`: it had already ended.",
        examples=["cancelled"],
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class PromptInfo(BaseModel):
    name: str
    description: str
    version: str = Field(
        pattern=r"^[0-9a-f]{12}$",
        description="The first 12 hex digits of the sha256 of the prompt file: "
        "a new one each time the file changes (the service reloads it).",
    )


class PromptList(BaseModel):
    default: str
    prompts: list[PromptInfo]


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    provider: str
    model: str
    demo_fallback: bool
    max_query_chars: int = Field(description="The longest query accepted, in characters.")
    notice: str | None = Field(default=None, description="Only when the demo is a fallback.")
    scenarios: list[str] | None = Field(default=None, description="Only on the demo provider.")


EVENT_MODELS: tuple[type[BaseModel], ...] = (MetaEvent, TextEvent, DoneEvent, ErrorBody)


class StreamTicket(BaseModel):
    """What `POST /stream-tickets` issued: one GET /ai_write of the same request may use it."""

    model_config = ConfigDict(extra="forbid")

    ticket: str = Field(
        pattern=r"^[A-Za-z0-9_-]{43}$",
        description="Send as `GET /ai_write?<the same fields>&ticket=<ticket>`; works once.",
    )
    expires_in: int = Field(ge=1, description="Seconds until it expires unused.")


SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    *EVENT_MODELS,
    CancelResult,
    StreamTicket,
    Health,
    PromptList,
    Readiness,
)

STREAM_EXAMPLE = (
    "id: Qm9yZWFsaXMtbWFnbmEtMQ:0\n"
    'data: {"meta":{"request_id":"3f1c9a5e2b7d4e0f8a6b1c2d3e4f5a6b","provider":"openai",'
    '"model":"gpt-4o-mini","prompt":"explain","answer_id":"Qm9yZWFsaXMtbWFnbmEtMQ",'
    '"demo_fallback":false}}\n'
    "retry: 1000\n\n"
    "id: Qm9yZWFsaXMtbWFnbmEtMQ:1\n"
    'data: {"text":"Photosynthesis is"}\n\n'
    ": keep-alive\n"
    "id: Qm9yZWFsaXMtbWFnbmEtMQ:2\n"
    'data: {"text":" how plants turn light into sugar."}\n\n'
    "id: Qm9yZWFsaXMtbWFnbmEtMQ:3\n"
    'data: {"done":{"finish_reason":"stop","usage":{"input_tokens":31,"output_tokens":9,'
    '"total_tokens":40},"ttft_ms":412.7,"chars":51,"duration_ms":904.1,"provider":"openai",'
    '"model":"gpt-4o-mini"}}\n\n'
)

STREAM_DESCRIPTION = """\
Server-Sent Events. Each event is unnamed (type `message`) and has an `id`
(`<answer id>:<seq>`) and one `data` line: a JSON object with one key. Send
the last id back as `Last-Event-ID` to resume after a drop.

| key | how many | schema |
|---|---|---|
| `meta` | exactly 1, first | `MetaEvent` |
| `text` | 0 or more | `TextEvent` |
| `done` | 0 or 1, last | `DoneEvent` |
| `error` | 0 or 1, last | `ErrorBody` (a failure after the stream started) |

Every stream ends with one `done` or one `error`. While the model is silent
the server sends `: keep-alive` comment lines. The whole contract is
docs/PROTOCOL.md in the repository."""
