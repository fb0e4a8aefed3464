"""The SDK clients hand stream chunks up as dicts, and the LangChain models read them exactly."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from openai.types.chat import ChatCompletion

from qa_service.config import Settings
from qa_service.generation.providers import open_chat_model
from qa_service.generation.sdk_clients import (
    PlainChunksAsyncGroq,
    PlainChunksAsyncOpenAI,
    plain_chunks_client,
)

PIECES = ["Hé", "llo,\r\n", " wor", "ld 👋🏽"]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m1",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _sse_body(provider: str) -> bytes:
    usage = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    events = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": piece}) for piece in PIECES]
    if provider == "openai":
        events += [_chunk({}, "stop"), {**_chunk({}), "choices": [], "usage": usage}]
    else:  # Groq reports usage in x_groq, on the finishing chunk.
        events += [{**_chunk({}, "stop"), "x_groq": {"id": "r1", "usage": usage}}]
    lines = [f"data: {json.dumps(event)}\n\n" for event in events]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


def _provider_transport(provider: str) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("stream"):
            return httpx.Response(
                200, content=_sse_body(provider), headers={"content-type": "text/event-stream"}
            )
        completion = {
            **_chunk({}),
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "whole"},
                    "finish_reason": "stop",
                }
            ],
        }
        return httpx.Response(200, json=completion)

    return httpx.MockTransport(handle)


def _client(provider: str) -> PlainChunksAsyncOpenAI | PlainChunksAsyncGroq:
    return plain_chunks_client(
        provider,
        api_key="test-key",
        base_url="http://127.0.0.1:9/v1",
        timeout=httpx.Timeout(5.0),
        max_retries=0,
        http_client=httpx.AsyncClient(transport=_provider_transport(provider)),
    )


@pytest.mark.parametrize("provider", ["openai", "groq"])
async def test_a_stream_comes_as_the_dicts_it_was_sent_as(provider: str) -> None:
    client = _client(provider)
    stream = await client.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "q"}], stream=True
    )
    # Typed as the SDK's chunk model; what matters is what really comes.
    chunks: list[object] = [chunk async for chunk in stream]

    assert all(type(chunk) is dict for chunk in chunks)
    assert chunks[1] == _chunk({"content": PIECES[0]})


async def test_a_whole_completion_is_still_the_sdks_model() -> None:
    client = _client("openai")
    completion = await client.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "q"}]
    )
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "whole"


@pytest.mark.parametrize("provider", ["openai", "groq"])
async def test_the_langchain_model_streams_the_text_finish_reason_and_usage_exactly(
    provider: str,
) -> None:
    settings = Settings(
        _env_file=None,
        provider=provider,
        model="m1",
        openai_api_key="sk-x",
        groq_api_key="gsk_x",
        openai_base_url="http://127.0.0.1:9/v1",
        groq_base_url="http://127.0.0.1:9",
    )
    async with open_chat_model(settings) as model:
        # The service's own HTTP client, answering from memory instead of a socket.
        model.http_async_client._transport = _provider_transport(provider)  # type: ignore[attr-defined]
        sdk = model.async_client._client  # type: ignore[attr-defined]
        assert isinstance(sdk, PlainChunksAsyncOpenAI | PlainChunksAsyncGroq)
        chunks = [chunk async for chunk in model.astream([HumanMessage("q")])]

    merged = sum(chunks[1:], chunks[0])
    assert isinstance(merged, AIMessageChunk)
    assert merged.content == "".join(PIECES)
    assert merged.response_metadata["finish_reason"] == "stop"
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["output_tokens"] == 4
