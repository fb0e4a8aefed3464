"""The Vercel AI SDK dialect: `POST /api/chat` and its resume, `GET /api/chat/{id}/stream`.

What `useChat` with `DefaultChatTransport` speaks (docs/PROTOCOL.md). Answers
start through api/opening.py like every dialect's, so keys, limits, budgets,
metrics and logs are the same; wire/ai_sdk.py renders their events.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from qa_service.api.asks import checked_request
from qa_service.api.deps import Service, ServiceDep, client_of
from qa_service.api.guards import STARTS_DIALECT_ANSWERS
from qa_service.api.opening import connection_events, open_answer
from qa_service.api.ui_messages import ask_of, read_chat_body
from qa_service.core import errors
from qa_service.core.events import AnswerEvent
from qa_service.wire import ai_sdk, sse

router = APIRouter()


@router.post(
    "/api/chat",
    response_class=EventSourceResponse,
    operation_id="chat",
    dependencies=STARTS_DIALECT_ANSWERS,
)
async def chat(service: ServiceDep, request: Request) -> Response:
    """Answer the chat's last user message, the earlier ones as history, as a UI message stream."""
    body = await read_chat_body(service, request)
    answer_request = checked_request(service, ask_of(body))
    opened = await open_answer(service, answer_request, request)
    try:
        await service.chats.remember(client_of(request), body.id, opened.answer_id)
    except BaseException:
        # The store failed (or the client left): the answer will never be sent,
        # so it must not run on, unread and paid for.
        await opened.events.aclose()
        await service.registry.cancel(opened.answer_id, errors.STORE_UNAVAILABLE, "error")
        raise
    response = _ui_message_stream(service, opened.events, opened.shutdown)
    response.headers.update(opened.headers)
    return response


@router.get(
    # :path, so a chat id with a slash in it (sent as %2F) still reaches here.
    "/api/chat/{chat_id:path}/stream",
    response_class=EventSourceResponse,
    operation_id="chat_resume",
    dependencies=STARTS_DIALECT_ANSWERS,
)
async def chat_resume(service: ServiceDep, request: Request, chat_id: str) -> Response:
    """The chat's answer in progress, from its start; 204 when none is (none, or it ended).

    From the start because the SDK cannot continue a message it has half of
    (vercel/ai#13160): it replaces the message with what this sends. Only the
    client that started the chat's answer finds it (answers/chats.py).
    """
    answer_id = await service.chats.latest(client_of(request), chat_id)
    if answer_id is None:
        return Response(status_code=204)
    info = await service.registry.store.describe(answer_id)
    if info is None or info.final_seq is not None:
        return Response(status_code=204)
    service.telemetry.resumed(info.last_seq + 1)
    shutdown = anyio.Event()
    events = connection_events(service, answer_id, -1, shutdown)
    return _ui_message_stream(service, events, shutdown)


def _ui_message_stream(
    service: Service, events: AsyncGenerator[AnswerEvent], shutdown: anyio.Event
) -> Response:
    response = sse.event_stream_response(ai_sdk.render_stream(events), service.settings, shutdown)
    response.headers[ai_sdk.STREAM_HEADER] = ai_sdk.STREAM_VERSION
    return response
