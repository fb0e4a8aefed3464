"""What a request to start an answer may say, and the checks it must pass.

Shared by /ai_write and /stream-tickets: a ticket is issued only for a request
that /ai_write would take, and refused the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request

from qa_service.answers.model import AnswerRequest
from qa_service.api.deps import Service, body_limit, read_capped_body, require_json
from qa_service.api.validation import NOT_BLANK, describe_body_error, describe_query_string_error
from qa_service.config import Settings
from qa_service.core import errors
from qa_service.generation.history import Role, Turn, trimmed
from qa_service.generation.prompts import PROMPT_NAME, Prompt


class HistoryMessage(BaseModel):
    """One earlier turn of the conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str


class AskBody(BaseModel):
    """`POST /ai_write` body: the GET query string's fields, and the earlier
    turns. A JSON null is the same as leaving a field out (/openapi.json says so)."""

    model_config = ConfigDict(extra="forbid")

    query: str | None = None
    prompt: str | None = None
    scenario: str | None = None
    # Oldest first; the new question stays in `query`.
    history: list[HistoryMessage] | None = None


# GET /ai_write's query string: AskBody's fields but the history (a
# conversation is a POST), and a stream ticket (api/auth.py).
QUERY_PARAMETERS = (*(name for name in AskBody.model_fields if name != "history"), "ticket")


def ask_from_query_string(request: Request) -> AskBody:
    """The fields of a GET /ai_write; unknown or repeated parameters are refused."""
    params = request.query_params
    problem = describe_query_string_error(params.multi_items(), QUERY_PARAMETERS)
    if problem is not None:
        raise errors.invalid_request(problem)
    return AskBody.model_validate(
        {name: params[name] for name in AskBody.model_fields if name in params}
    )


def resumes(request: Request) -> bool:
    """Whether the request names an answer to continue (a Last-Event-ID that is
    not blank). Such a request never starts a new answer: the answer it names
    is resumed, or it is refused."""
    return bool(request.headers.get("last-event-id", "").strip())


async def read_ask_body(service: Service, request: Request) -> AskBody:
    return await read_json_body(service, request, AskBody)


Body = TypeVar("Body", bound=BaseModel)


async def read_json_body(
    service: Service, request: Request, model: type[Body], extra_bytes: int = 0
) -> Body:
    """A POST's JSON body, in any dialect: declared as JSON, capped in size
    (`extra_bytes` over the common cap, for a dialect's own wrapping), then
    validated; refused (JSON 4xx) naming the field, never the value."""
    require_json(request)
    body = await read_capped_body(request, body_limit(service.settings) + extra_bytes)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise errors.invalid_request(describe_body_error(exc, body)) from None


def checked_request(service: Service, ask: AskBody) -> AnswerRequest:
    """The answer `ask` asks for; refused (JSON 422) before any upstream call."""
    settings = service.settings
    prompt = _checked_prompt(ask.prompt, service)
    return AnswerRequest(
        question=checked_query(ask.query, settings.max_query_chars),
        prompt=prompt.name,
        configurable=_checked_scenario(ask.scenario, service),
        history=checked_history([Turn(m.role, m.content) for m in ask.history or ()], settings),
        prompt_version=prompt.version,
    )


def checked_history(history: Sequence[Turn], settings: Settings) -> tuple[Turn, ...]:
    """The turns to send: refused (422) past the hard limits, then trimmed to
    the token budget. Every dialect's history goes through here."""
    if len(history) > settings.max_history_messages:
        raise errors.history_too_long(f"more than {settings.max_history_messages} messages")
    if sum(len(turn.content) for turn in history) > settings.max_history_chars:
        raise errors.history_too_long(f"more than {settings.max_history_chars} characters")
    return trimmed(history, settings.max_history_tokens)


def checked_query(query: str | None, limit: int) -> str:
    if query is None or not NOT_BLANK.search(query):
        raise errors.query_required()
    if len(query) > limit:
        raise errors.query_too_long(limit)
    return query


def checked_model(service: Service, model: str) -> Prompt:
    """The prompt an OpenAI dialect's `model` names, at the version in force now."""
    prompt = service.prompts.get(model)
    if prompt is None:
        raise errors.model_not_found(model if PROMPT_NAME.fullmatch(model) else None)
    return prompt


def _checked_prompt(name: str | None, service: Service) -> Prompt:
    """The prompt at the version in force now: the answer keeps it, whatever a reload does."""
    prompt = service.prompts.get(service.settings.default_prompt if name is None else name)
    if prompt is None:
        raise errors.unknown_prompt(
            name if name is not None and PROMPT_NAME.fullmatch(name) else None,
            service.prompts.names(),
        )
    return prompt


def _checked_scenario(scenario: str | None, service: Service) -> dict[str, str]:
    if scenario is None:
        return {}
    capabilities = service.capabilities
    if scenario not in capabilities.scenarios:
        raise errors.unknown_scenario(list(capabilities.scenarios))
    return {capabilities.scenario_config_key: scenario}
