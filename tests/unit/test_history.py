"""The conversation's earlier turns: trimming, their place in the prompt, the fingerprint."""

from __future__ import annotations

from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from qa_service.answers.model import AnswerRequest
from qa_service.generation.history import HISTORY_VARIABLE, Turn, as_messages, trimmed
from qa_service.generation.prompts import QUERY_VARIABLE, load_prompts

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"

# About 100 estimated tokens a turn (four characters a token, plus a few per message).
LONG = "x" * 400
CONVERSATION = (
    Turn("user", "first " + LONG),
    Turn("assistant", "first answer " + LONG),
    Turn("user", "second"),
    Turn("assistant", "second answer"),
)


def test_everything_fits_so_everything_is_kept() -> None:
    assert trimmed(CONVERSATION, 10_000) == CONVERSATION


def test_the_oldest_turns_go_first_and_only_whole_turns_are_kept() -> None:
    kept = trimmed(CONVERSATION, 50)

    assert kept == CONVERSATION[2:]


def test_what_is_kept_starts_with_a_question_and_ends_with_an_answer() -> None:
    # Room for the first answer but not its question: the orphaned answer goes too.
    orphan_room = trimmed(CONVERSATION, 150)
    # A trailing question with no answer is not history: the new question follows.
    dangling = trimmed((*CONVERSATION, Turn("user", "unanswered")), 10_000)

    assert orphan_room == CONVERSATION[2:]
    assert dangling == CONVERSATION


def test_no_budget_or_no_room_means_no_history() -> None:
    assert trimmed(CONVERSATION, 0) == ()
    assert trimmed(CONVERSATION, 3) == ()
    assert trimmed((), 100) == ()


def test_every_prompt_puts_the_turns_between_its_system_part_and_the_question() -> None:
    for prompt in load_prompts(PROMPTS).values():
        messages = prompt.template.format_messages(
            **{QUERY_VARIABLE: "the question", HISTORY_VARIABLE: as_messages(CONVERSATION[2:])}
        )

        assert [type(m) for m in messages] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
        assert [m.content for m in messages[1:3]] == ["second", "second answer"]
        assert "the question" in messages[-1].text
        # Without history the prompt is what it always was.
        alone = prompt.template.format_messages(**{QUERY_VARIABLE: "q"})
        assert [type(m) for m in alone] == [SystemMessage, HumanMessage]


def test_the_history_is_part_of_what_a_resume_must_match() -> None:
    plain = AnswerRequest("q", "explain", {})
    followup = AnswerRequest("q", "explain", {}, history=CONVERSATION[2:])
    other = AnswerRequest("q", "explain", {}, history=(Turn("user", "x"), Turn("assistant", "y")))

    assert len({plain.fingerprint(), followup.fingerprint(), other.fingerprint()}) == 3
    # A question without history keeps the digest stored before conversations existed.
    # (sha256 of the canonical JSON ["q","explain",[]]).
    assert plain.fingerprint() == (
        "a7edd71b86973f883bb26b434c0c8ad36f6a66224ae69e0140242ee54ca14add"
    )
