"""A conversation's earlier turns: as the prompt's messages, trimmed to a token budget.

Tokens are estimated (langchain-core's count_tokens_approximately, about four
characters a token) rather than counted with a provider's tokenizer: the
budget must hold for OpenAI, Groq and any compatible server alike, and a real
tokenizer would need its vocabulary downloaded at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, trim_messages
from langchain_core.messages.utils import count_tokens_approximately

# The prompt variable the earlier turns fill (a MessagesPlaceholder, prompts.py).
HISTORY_VARIABLE = "history"

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier message of the conversation, oldest first in a history."""

    role: Role
    content: str


def as_messages(history: Sequence[Turn]) -> list[BaseMessage]:
    return [
        HumanMessage(turn.content) if turn.role == "user" else AIMessage(turn.content)
        for turn in history
    ]


def trimmed(history: Sequence[Turn], max_tokens: int) -> tuple[Turn, ...]:
    """The most recent turns that fit in `max_tokens`, whole turns only.

    What is kept starts with a user turn (a model answers a question, not an
    orphaned answer) and ends with an assistant turn, since the new question
    follows it. Nothing fits: no history, and the question is still answered.
    """
    if not history or max_tokens <= 0:
        return ()
    kept = trim_messages(
        as_messages(history),
        max_tokens=max_tokens,
        token_counter=count_tokens_approximately,
        strategy="last",
        start_on="human",
        end_on="ai",
        allow_partial=False,
    )
    # What trim_messages keeps is the turns that end at the last assistant
    # turn, so it maps back onto `history` as a slice.
    end = max((i + 1 for i, turn in enumerate(history) if turn.role == "assistant"), default=0)
    return tuple(history[end - len(kept) : end])
