"""What /openapi.json says about the AI SDK dialect: /api/chat and its resume (api/vercel.py)."""

from __future__ import annotations

from typing import Any

from qa_service.api.openapi_models import REF
from qa_service.api.ui_messages import MAX_CHAT_ID_CHARS

CHAT = "/api/chat"
CHAT_RESUME = "/api/chat/{chat_id}/stream"
# Both need `Authorization: Bearer` when API keys are on (api/guards.py).
KEYED_CHAT_OPERATIONS = ((CHAT, "post"), (CHAT_RESUME, "get"))

CHUNK_EXAMPLE = (
    'data: {"type":"start","messageId":"Qm9yZWFsaXMtbWFnbmEtMQ"}\n\n'
    'data: {"type":"start-step"}\n\n'
    'data: {"type":"text-start","id":"text"}\n\n'
    'data: {"type":"text-delta","id":"text","delta":"Photosynthesis is"}\n\n'
    ": keep-alive\n"
    'data: {"type":"text-delta","id":"text","delta":" how plants turn light into sugar."}\n\n'
    'data: {"type":"text-end","id":"text"}\n\n'
    'data: {"type":"finish-step"}\n\n'
    'data: {"type":"finish","finishReason":"stop"}\n\n'
    "data: [DONE]\n\n"
)
CHUNK_DESCRIPTION = """\
The Vercel AI SDK's UI message stream (header `x-vercel-ai-ui-message-stream: v1`),
for `useChat` with `DefaultChatTransport`. Every event is one `data` line, with
no `id` and no event name: a JSON chunk, `start` (messageId: the answer id),
`start-step`, `text-start`, `text-delta`..., `text-end`, `finish-step`,
`finish` (finishReason); or, when the answer fails after it started, `error`
(errorText: `<code>: <message>`). Then `[DONE]`. Needs ai 5.0.92 or later.
docs/PROTOCOL.md has the whole contract."""


def add_chat_schemas(components: dict[str, Any], prompt: dict[str, Any]) -> None:
    """The request body and the stream's event, as components. The body's schema
    is what is parsed; the rules across messages are in its description (a body
    that breaks them is refused with 422)."""
    part = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string"}, "text": {"type": ["string", "null"]}},
        "description": "`text` parts hold the text (`text` required). `step-start`, "
        "`reasoning`, `source-*` and `data-*` parts are skipped; other types are "
        "refused (422).",
    }
    message = {
        "type": "object",
        "required": ["role", "parts"],
        "properties": {
            "id": {"type": "string"},
            "role": {"type": "string", "enum": ["user", "assistant", "system"]},
            "parts": {"type": "array", "items": part},
        },
    }
    components["ChatBody"] = {
        "title": "ChatBody",
        "description": "What `DefaultChatTransport` sends. The last message must be the "
        "user's: its text is the question, checked like `query` (not blank, at most "
        "QA_MAX_QUERY_CHARS). Earlier user and assistant messages are the history, "
        "checked like /ai_write's. A `system` message is refused (422): the prompt's "
        "system part is the service's. Fields the service does not use are ignored.",
        "type": "object",
        "required": ["id", "messages"],
        "properties": {
            "id": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_CHAT_ID_CHARS,
                "description": "The chat id: a resume names it.",
            },
            "messages": {"type": "array", "items": message, "minItems": 1},
            "trigger": {"type": ["string", "null"], "description": "Not used."},
            "messageId": {"type": ["string", "null"], "description": "Not used."},
            "prompt": prompt,
        },
    }
    components["UIMessageChunkEvent"] = {
        "title": "UIMessageChunkEvent",
        "description": "One event: a `data` line holding a JSON chunk, or `[DONE]` last.",
        "type": "object",
        "properties": {"data": {"type": "string", "pattern": r'^(\[DONE\]|\{"type":")'}},
        "required": ["data"],
    }


def chat_operation(path: str, operation: dict[str, Any], errors: dict[str, Any]) -> None:
    """Describe one of the dialect's operations; `errors` are POST /ai_write's refusals,
    of which each keeps those it can give."""
    stream = {
        "description": CHUNK_DESCRIPTION,
        "headers": {
            "x-vercel-ai-ui-message-stream": {"schema": {"type": "string", "const": "v1"}},
        },
        "content": {
            "text/event-stream": {
                "schema": {"$ref": REF.format(model="UIMessageChunkEvent")},
                "example": CHUNK_EXAMPLE,
            }
        },
    }
    if path == CHAT:
        operation["summary"] = "Answer a useChat conversation (Vercel AI SDK UI message stream)"
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ChatBody")}}},
        }
        kept = ("401", "403", "413", "415", "429", "500", "502", "503", "504")
        refused = {
            "422": {
                **errors["422"],
                "description": "Refused before any model call: `query_required`, "
                "`query_too_long`, `history_too_long`, `unknown_prompt`, `invalid_request` "
                "(the body, a system message, a part that is not text, no user message last).",
            }
        }
        responses = {**{s: errors[s] for s in kept}, **refused, "200": stream}
        operation["responses"] = dict(sorted(responses.items()))
    else:
        operation["summary"] = "Resume a chat's answer in progress, from its start"
        operation["parameters"] = [_CHAT_ID]
        resume = {"200": stream, "204": {"description": "No answer of this chat is in progress."}}
        resume_kept = ("401", "403", "500", "503")
        responses = {**{s: errors[s] for s in resume_kept}, **resume}
        operation["responses"] = dict(sorted(responses.items()))
    operation["tags"] = ["ai-sdk"]


_CHAT_ID = {
    "name": "chat_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The `id` of the chat, as POST /api/chat was sent it. Only the client "
    "that started the answer (its API key, else its address) finds it.",
}
