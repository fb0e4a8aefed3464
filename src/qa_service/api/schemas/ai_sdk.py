"""The AI SDK dialect's OpenAPI declarations: /api/chat and its resume (api/routes/ai_sdk.py)."""

from __future__ import annotations

from typing import Any

from qa_service.api.schemas.models import REF, Responses
from qa_service.api.schemas.native import TOO_MANY_READERS_RESPONSE, stream_responses

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


def components(
    prompt: dict[str, Any], min_chat_id_chars: int, max_chat_id_chars: int
) -> dict[str, Any]:
    """The request body and the stream's event, as components. The body's schema
    is what is parsed; the rules across messages are in its description (a body
    that breaks them is refused with 422)."""
    components: dict[str, Any] = {}
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
                "minLength": min_chat_id_chars,
                "maxLength": max_chat_id_chars,
                "description": "The chat id: a resume names it. At least "
                f"{min_chat_id_chars} characters, and random (useChat's own are): "
                "with the browser's `qa_chat` cookie, it is what finds the chat's answer.",
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
    return components


CHAT_ID_PARAMETER = {
    "name": "chat_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The `id` of the chat, as POST /api/chat was sent it. Only the browser "
    "that started the answer finds it: it brings back the `qa_chat` cookie the POST set, "
    "and the same API key (else the same address).",
}


_STREAM: dict[str, Any] = {
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
CHAT_REQUEST_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": REF.format(model="ChatBody")}}},
}


def _kept(statuses: tuple[str, ...], more: Responses) -> Responses:
    """POST /ai_write's refusals of `statuses` (the ones this route can give), and `more`."""
    refusals = stream_responses("post")
    kept: Responses = {**{s: refusals[s] for s in statuses}, **more}
    return dict(sorted(kept.items(), key=str))


CHAT_RESPONSES = _kept(
    ("401", "403", "413", "415", "429", "500", "502", "503", "504"),
    {
        "422": {
            **stream_responses("post")["422"],
            "description": "Refused before any model call: `query_required`, "
            "`query_too_long`, `history_too_long`, `unknown_prompt`, `invalid_request` "
            "(the body, a system message, a part that is not text, no user message last).",
        },
        "200": {
            **_STREAM,
            "headers": {
                **_STREAM["headers"],
                "set-cookie": {
                    "schema": {"type": "string"},
                    "description": "`qa_chat=<token>; Path=/api/chat; HttpOnly; "
                    "SameSite=Strict; Max-Age=<QA_RESUME_TTL_SECONDS>` (and `Secure` over "
                    "https): the browser's token, which a resume of this chat must bring back.",
                },
            },
        },
    },
)
CHAT_RESUME_RESPONSES = _kept(
    ("401", "403", "500", "503"),
    {
        "200": _STREAM,
        "204": {
            "description": "No answer of this chat is in progress for this browser (none, "
            "it ended, or the request did not bring the `qa_chat` cookie of the browser "
            "that posted the chat)."
        },
        "429": TOO_MANY_READERS_RESPONSE,
    },
)
