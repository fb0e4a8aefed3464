"""The chat model's settings, worked out once per model (chat_models.py): what LangChain is
told stays what it was."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_openai import ChatOpenAI

from qa_service.generation.chat_models import TextFirstChatModel, TextFirstChatOpenAI


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


def test_a_copy_with_other_settings_reports_its_own() -> None:
    model = _openai_model()
    model._get_invocation_params()  # remembered by the original
    model._get_ls_params()

    copy = model.model_copy(update={"temperature": 0.9})

    assert copy._get_invocation_params()["temperature"] == 0.9
    assert copy._get_ls_params()["ls_temperature"] == 0.9
    assert model._get_invocation_params()["temperature"] == 0.3


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
