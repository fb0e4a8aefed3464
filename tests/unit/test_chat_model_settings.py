"""The chat model's settings, worked out once per model (chat_models.py), and the chain's
signatures, once per process (writer.py): what LangChain is told stays what it was."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.prompts import BasePromptTemplate
from langchain_core.runnables import RunnableSequence
from langchain_core.runnables.utils import accepts_config, accepts_run_manager
from langchain_openai import ChatOpenAI

from qa_service.generation.chat_models import TextFirstChatModel, TextFirstChatOpenAI
from qa_service.generation.prompts import load_prompts
from qa_service.generation.writer import InlineStrOutputParser

PROMPTS = load_prompts(Path(__file__).resolve().parents[2] / "prompts")


def _openai_model() -> TextFirstChatOpenAI:
    return TextFirstChatOpenAI(
        model="gpt-4o-mini",
        api_key="sk-test-not-a-real-key",  # type: ignore[arg-type]
        base_url="http://127.0.0.1:9/v1",
        temperature=0.3,
        max_tokens=100,
    )


def test_the_settings_a_call_reports_are_langchains_own() -> None:
    model = _openai_model()
    for _ in range(2):  # worked out, then remembered
        assert model._get_invocation_params() == ChatOpenAI._get_invocation_params(model)
        assert model._get_ls_params() == ChatOpenAI._get_ls_params(model)


def test_a_change_to_the_settings_one_call_got_is_not_seen_by_the_next() -> None:
    model = _openai_model()
    model._get_invocation_params()["temperature"] = 1.0
    model._get_ls_params()["ls_max_tokens"] = 1

    assert model._get_invocation_params()["temperature"] == 0.3
    assert model._get_ls_params()["ls_max_tokens"] == 100


def test_a_calls_own_stop_and_kwargs_are_in_its_settings() -> None:
    model = _openai_model()
    model._get_invocation_params()  # the remembered ones exist

    own = model._get_invocation_params(stop=["\n"], max_tokens=5)

    assert own["stop"] == ["\n"]
    assert own["max_tokens"] == 5
    assert model._get_ls_params(max_tokens=5)["ls_max_tokens"] == 5
    assert "max_tokens" not in model._get_invocation_params()


class _FakeTextFirstModel(TextFirstChatModel, GenericFakeChatModel):
    """A scripted model with the settings memory of the service's models."""


class _StartRecorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.caps: list[object] = []

    async def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.caps.append(kwargs["invocation_params"].get("max_tokens"))


async def test_each_call_reports_its_own_cap_to_the_callbacks() -> None:
    # As the writer asks: the model as it is, or bound to an answer's own cap.
    model = _FakeTextFirstModel(messages=iter(["one two", "three four", "five six"]))
    caps: list[object] = []
    for cap in (None, 3, None):
        handler = _StartRecorder()
        bound = model if cap is None else model.bind(max_tokens=cap)
        await bound.ainvoke("q", config={"callbacks": [handler]})
        caps += handler.caps

    assert caps == [None, 3, None]


def test_the_chains_functions_carry_the_signature_inspect_would_give() -> None:
    functions = (
        RunnableSequence._atransform,
        BasePromptTemplate._aformat_prompt_with_error_handling,
        InlineStrOutputParser._atransform,
    )
    for function in functions:
        assert "__signature__" in vars(function), function.__qualname__
        code = function.__code__
        named = code.co_argcount + code.co_kwonlyargcount
        named += bool(code.co_flags & inspect.CO_VARARGS)
        named += bool(code.co_flags & inspect.CO_VARKEYWORDS)
        assert list(function.__signature__.parameters) == list(code.co_varnames[:named])
    # What LangChain asks of them, per answer, still answered the same way.
    sequence = (
        PROMPTS["explain"].template
        | GenericFakeChatModel(messages=iter(()))
        | (InlineStrOutputParser())
    )
    assert accepts_run_manager(sequence._atransform)
    assert accepts_config(sequence._atransform)
    assert not accepts_config(InlineStrOutputParser()._atransform)
