"""The Vercel AI SDK dialect: `POST /api/chat` and its resume, `GET /api/chat/{id}/stream`.

What `useChat` with `DefaultChatTransport` speaks (docs/PROTOCOL.md). Answers
start through api/opening.py like every dialect's, so keys, limits, budgets,
metrics and logs are the same; wire/ai_sdk.py renders their events.

What a request may say (the body `DefaultChatTransport` sends): the last message
must be the user's: its text parts are the question, checked
like `query`. The earlier messages' text parts are the history, checked like
/ai_write's. Refused (JSON 422 `invalid_request`), because no answer could
honour them:
- a `system` message: the prompt's system part is the service's own, and a
  client picks one with `prompt`, never replaces it;
- parts a text model cannot be given (`file`, tools, and any type not known
  here). Parts that carry nothing for the model are skipped: `step-start`,
  `reasoning`, sources, and the app's own `data-*` parts.
Fields the service does not use (message ids, metadata, a part's state, the
app's own `body` fields) are ignored, so newer SDKs and apps keep working.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from qa_service.api.asks import AskBody, HistoryMessage, checked_request, read_json_body
from qa_service.api.chat_browsers import browser_of, give_browser_token, new_browser_token
from qa_service.api.deps import Service, ServiceDep, client_of
from qa_service.api.dialects import NativeAnswerRoute, NativeRoute
from qa_service.api.guards import STARTS_DIALECT_ANSWERS
from qa_service.api.openapi.facts import StartUpFacts, or_null
from qa_service.api.opening import open_answer
from qa_service.api.schemas import ai_sdk as schemas
from qa_service.api.validation import named
from qa_service.core import errors
from qa_service.core.events import AnswerEvent
from qa_service.wire import ai_sdk, sse

# The longest chat id taken. useChat's own are 16 characters, a UUID is 36.
MAX_CHAT_ID_CHARS = 256
# The shortest: useChat's own (the SDK's generateId: 16 of 62 characters,
# about 95 bits). A chat id is half of what finds a chat's answer (the
# browser's cookie is the other, api/chat_browsers.py), so a guessable one
# ("1", "chat") is refused rather than made safe by the cookie alone.
MIN_CHAT_ID_CHARS = 16
# What a UI message carries besides its text: ids, roles, part types, states.
UI_MESSAGE_OVERHEAD_BYTES = 512
# Parts with nothing for the model: the SDK's own convertToModelMessages drops
# them too, or they are an assistant's own workings.
_SKIPPED_PARTS = frozenset({"step-start", "reasoning", "source-url", "source-document"})
# Between the text parts of one message.
PART_SEPARATOR = "\n"


class UIPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    parts: list[UIPart]


class ChatBody(BaseModel):
    """`POST /api/chat`: what `DefaultChatTransport.sendMessages` sends, and `prompt`
    (a useChat app sends it with `body: { prompt }`)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=MIN_CHAT_ID_CHARS, max_length=MAX_CHAT_ID_CHARS)
    messages: list[UIMessage] = Field(min_length=1)
    # submit-message or regenerate-message: both answer the last user message.
    trigger: str | None = None
    messageId: str | None = None  # the message a regenerate replaces; unused
    prompt: str | None = None


async def read_chat_body(service: Service, request: Request) -> ChatBody:
    """The JSON body, with room for each history message's ids, roles and parts."""
    overhead = service.settings.max_history_messages * UI_MESSAGE_OVERHEAD_BYTES
    return await read_json_body(service, request, ChatBody, extra_bytes=overhead)


def ask_of(chat: ChatBody, max_history_messages: int) -> AskBody:
    """The question (the last message, the user's) and the history before it.

    Left to api/asks.py checked_request: blank or too long a question, too long
    a history, an unknown prompt. Earlier messages without text (an answer that
    failed before its first word) are left out of the history, but count
    against QA_MAX_HISTORY_MESSAGES: else 14,000 empty ones were taken, each
    parsed and checked, for one answer.
    """
    *earlier, last = chat.messages
    if last.role != "user":
        raise errors.invalid_request("messages: the last message must be the user's question")
    if len(earlier) > max_history_messages:
        raise errors.history_too_long(f"more than {max_history_messages} messages")
    history = []
    for index, message in enumerate(earlier):
        text = _text_of(message, index)
        if text:
            role = "user" if message.role == "user" else "assistant"
            history.append(HistoryMessage(role=role, content=text))
    return AskBody(query=_text_of(last, len(earlier)), prompt=chat.prompt, history=history)


def _text_of(message: UIMessage, index: int) -> str:
    if message.role == "system":
        raise errors.invalid_request(
            f"messages.{index}: a system message is not taken; the service's prompt "
            "has the system part (choose a prompt with `prompt`)"
        )
    texts = []
    for part_index, part in enumerate(message.parts):
        if part.type == "text":
            if part.text is None:
                raise errors.invalid_request(f"messages.{index}.parts.{part_index}.text: missing")
            texts.append(part.text)
        elif part.type not in _SKIPPED_PARTS and not part.type.startswith("data-"):
            kind = named(part.type, "this type")
            raise errors.invalid_request(
                f"messages.{index}.parts.{part_index}: a {kind} part cannot be answered; "
                "only text is"
            )
    return PART_SEPARATOR.join(texts)


def components(facts: StartUpFacts) -> dict[str, Any]:
    """The request body (its `prompt` names a loaded prompt) and the stream's event."""
    return schemas.components(
        or_null(facts.ask_fields()["prompt"]), MIN_CHAT_ID_CHARS, MAX_CHAT_ID_CHARS
    )


# The AI SDK reads our error shape; a refused chat is a refused answer.
chat_routes = APIRouter(route_class=NativeAnswerRoute, tags=["ai-sdk"])
resume_routes = APIRouter(route_class=NativeRoute, tags=["ai-sdk"])


@chat_routes.post(
    "/api/chat",
    response_class=EventSourceResponse,
    operation_id="chat",
    summary="Answer a useChat conversation (Vercel AI SDK UI message stream)",
    responses=schemas.CHAT_RESPONSES,
    openapi_extra={"requestBody": schemas.CHAT_REQUEST_BODY},
    dependencies=STARTS_DIALECT_ANSWERS,
)
async def chat(service: ServiceDep, request: Request) -> Response:
    """Answer the chat's last user message, the earlier ones as history, as a UI message stream."""
    body = await read_chat_body(service, request)
    answer_request = checked_request(service, ask_of(body, service.settings.max_history_messages))
    opened = await open_answer(service, answer_request, request)
    browser = browser_of(request) or new_browser_token()
    try:
        await service.chats.remember(client_of(request), browser, body.id, opened.answer_id)
    except BaseException:
        # The store failed (or the client left): the answer will never be sent,
        # so it must not run on, unread and paid for.
        await opened.events.aclose()
        await service.registry.cancel(opened.answer_id, errors.STORE_UNAVAILABLE, "error")
        raise
    response = _ui_message_stream(service, opened.events, opened.shutdown)
    response.headers.update(opened.headers)
    give_browser_token(request, response, browser, service.settings.resume_ttl_seconds)
    return response


@resume_routes.get(
    # :path, so a chat id with a slash in it (sent as %2F) still reaches here.
    "/api/chat/{chat_id:path}/stream",
    response_class=EventSourceResponse,
    operation_id="chat_resume",
    summary="Resume a chat's answer in progress, from its start",
    responses=schemas.CHAT_RESUME_RESPONSES,
    openapi_extra={"parameters": [schemas.CHAT_ID_PARAMETER]},
    dependencies=STARTS_DIALECT_ANSWERS,
)
async def chat_resume(service: ServiceDep, request: Request, chat_id: str) -> Response:
    """The chat's answer in progress, from its start; 204 when none is (none, or it ended).

    From the start because the SDK cannot continue a message it has half of
    (vercel/ai#13160): it replaces the message with what this sends. Only the
    browser that started the chat's answer finds it, with its client's key
    (api/chat_browsers.py, answers/chats.py).
    """
    browser = browser_of(request)
    if browser is None:
        return Response(status_code=204)
    answer_id = await service.chats.latest(client_of(request), browser, chat_id)
    if answer_id is None:
        return Response(status_code=204)
    info = await service.registry.store.describe(answer_id)
    if info is None or info.final_seq is not None:
        return Response(status_code=204)
    shutdown = anyio.Event()
    try:
        events = service.connection_events(answer_id, -1, shutdown, client_of(request))
    except errors.QAServiceError as exc:
        service.telemetry.resume_refused(exc.public.code)
        raise
    service.telemetry.resumed(info.last_seq + 1)
    if service.answer_spans is not None:
        service.answer_spans.link(answer_id, "resume")
    return _ui_message_stream(service, events, shutdown)


def _ui_message_stream(
    service: Service, events: AsyncGenerator[AnswerEvent], shutdown: anyio.Event
) -> Response:
    response = sse.event_stream_response(ai_sdk.render_stream(events), service.settings, shutdown)
    response.headers[ai_sdk.STREAM_HEADER] = ai_sdk.STREAM_VERSION
    return response


# The AI SDK surface, in the order /openapi.json lists it.
router = APIRouter()
router.include_router(chat_routes)
router.include_router(resume_routes)
