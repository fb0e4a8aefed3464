"""The chat model per provider, and the HTTP clients the service owns and closes."""

from __future__ import annotations

import httpx
import pytest
from langchain_core.runnables.configurable import RunnableConfigurableFields
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI

from qa_service.config import Settings
from qa_service.generation.demo import SCENARIO_CONFIG_KEY, DemoChatModel
from qa_service.generation.providers import open_chat_model


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "kind", "base_url"),
    [
        (
            {
                "provider": "openai",
                "openai_api_key": "sk-x",
                "openai_base_url": "http://127.0.0.1:9/v1",
            },
            ChatOpenAI,
            "http://127.0.0.1:9/v1",
        ),
        (
            {"provider": "groq", "groq_api_key": "gsk_x", "groq_base_url": "http://127.0.0.1:9"},
            ChatGroq,
            "http://127.0.0.1:9",
        ),
    ],
)
async def test_the_models_http_clients_are_ours_and_close_with_it(
    values: dict[str, object], kind: type, base_url: str
) -> None:
    settings = _settings(model="m1", temperature=0.3, max_tokens=77, **values)

    async with open_chat_model(settings) as model:
        assert isinstance(model, kind)
        client = model.http_async_client  # type: ignore[attr-defined]
        assert isinstance(client, httpx.AsyncClient)
        assert not client.is_closed
        assert model.model_name == "m1"  # type: ignore[attr-defined]
        assert model.max_tokens == 77  # type: ignore[attr-defined]

    assert client.is_closed
    assert model.http_client.is_closed  # type: ignore[attr-defined]


async def test_openai_model_asks_for_streamed_usage_and_holds_the_key_as_a_secret() -> None:
    settings = _settings(provider="openai", openai_api_key="sk-secret-value")
    async with open_chat_model(settings) as model:
        assert model.stream_usage is True  # type: ignore[attr-defined]
        assert "sk-secret-value" not in repr(model)


async def test_the_demo_provider_gives_the_demo_model_with_its_scenario_configurable() -> None:
    async with open_chat_model(_settings(provider="demo")) as model:
        assert isinstance(model, RunnableConfigurableFields)
        assert isinstance(model.default, DemoChatModel)
        assert SCENARIO_CONFIG_KEY in {spec.id for spec in model.config_specs}
