"""What a `useChat` request may say (the body `DefaultChatTransport` sends), and the
question and history it holds. See docs/PROTOCOL.md, "Vercel AI SDK".

The last message must be the user's: its text parts are the question, checked
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

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from qa_service.api.asks import AskBody, HistoryMessage, read_json_body
from qa_service.api.deps import Service
from qa_service.api.validation import named
from qa_service.core import errors

# The longest chat id taken. useChat's own are 16 characters, a UUID is 36.
MAX_CHAT_ID_CHARS = 256
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

    id: str = Field(min_length=1, max_length=MAX_CHAT_ID_CHARS)
    messages: list[UIMessage] = Field(min_length=1)
    # submit-message or regenerate-message: both answer the last user message.
    trigger: str | None = None
    messageId: str | None = None  # the message a regenerate replaces; unused
    prompt: str | None = None


async def read_chat_body(service: Service, request: Request) -> ChatBody:
    """The JSON body, with room for each history message's ids, roles and parts."""
    overhead = service.settings.max_history_messages * UI_MESSAGE_OVERHEAD_BYTES
    return await read_json_body(service, request, ChatBody, extra_bytes=overhead)


def ask_of(chat: ChatBody) -> AskBody:
    """The question (the last message, the user's) and the history before it.

    Left to api/asks.py checked_request: blank or too long a question, too long
    a history, an unknown prompt. Earlier messages without text (an answer that
    failed before its first word) are left out of the history.
    """
    *earlier, last = chat.messages
    if last.role != "user":
        raise errors.invalid_request("messages: the last message must be the user's question")
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
