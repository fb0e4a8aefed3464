"""POST /v1/responses driven by LangChain's `ChatOpenAI(use_responses_api=True)` and
the OpenAI Agents SDK, against the real service and the provider stub; and the
hang-up rule for Responses: no paid grace for a response nobody can resume."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import Iterator

import agents
import httpx
import openai
import pytest
from agents import Agent, OpenAIResponsesModel, RawResponsesStreamEvent, Runner
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_openai import ChatOpenAI
from openai.types.responses import ResponseTextDeltaEvent

from tests.integration.test_answers import HARD_PIECES
from tests.support.providers import marker, provider_settings
from tests.support.service import PROMPTS, RunningService, run_service
from tests.support.upstream_stub import Reply, UpstreamStub

# Every client below is bounded by this; no read can wait longer.
TIMEOUT = 30.0
DELTA = "response.output_text.delta"
LONG = ["piece "] * 200  # 10 s at 50 ms a piece: still running when its client leaves
CHAT_SYSTEM = tomllib.loads((PROMPTS / "chat.toml").read_text(encoding="utf-8"))["system"]


@pytest.fixture(scope="module")
def graced(
    stub: UpstreamStub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """A service with the default resume grace (not the shared services' 0)."""
    workdir = tmp_path_factory.mktemp("responses-clients")
    with run_service(provider_settings("openai", stub), workdir) as service:
        yield service


def _chat_model(service: RunningService, http: httpx.AsyncClient, **extra: object) -> ChatOpenAI:
    return ChatOpenAI(
        model="chat",
        use_responses_api=True,
        base_url=f"{service.url}/v1",
        api_key="unused",
        max_retries=0,
        http_async_client=http,
        **extra,  # type: ignore[arg-type]
    )


def _user_turns(messages: list[dict[str, object]]) -> list[tuple[object, object]]:
    """The messages the provider got, after the prompt's own system message."""
    assert messages[0] == {"role": "system", "content": CHAT_SYSTEM}
    return [(m["role"], m["content"]) for m in messages[1:]]


def test_langchain_streams_and_invokes_the_exact_text(
    graced: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=HARD_PIECES, write_slice_bytes=1))

    async def both() -> tuple[str, str]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            model = _chat_model(graced, http)
            streamed = [chunk.text async for chunk in model.astream(key)]
            invoked = await model.ainvoke(key)
        return "".join(streamed), invoked.text

    streamed, invoked = asyncio.run(both())

    assert streamed == "".join(HARD_PIECES)
    assert invoked == "".join(HARD_PIECES)
    assert len(stub.exchanges_for(key)) == 2


def test_langchains_previous_response_id_sends_the_earlier_turns(
    graced: RunningService, stub: UpstreamStub
) -> None:
    first_key, second_key = marker(), marker()
    # The second request holds both markers (its history has the first): the
    # stub gives the reply registered first, so that is the second's.
    stub.reply(second_key, Reply(pieces=["second ", "answer"]))
    stub.reply(first_key, Reply(pieces=["first ", "answer"]))

    async def two_turns() -> tuple[BaseMessage, BaseMessage]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            model = _chat_model(graced, http, use_previous_response_id=True)
            first = await model.ainvoke(first_key)
            second = await model.ainvoke([HumanMessage(first_key), first, HumanMessage(second_key)])
        return first, second

    first, second = asyncio.run(two_turns())

    assert (first.text, second.text) == ("first answer", "second answer")
    (exchange,) = stub.exchanges_for(second_key)
    assert _user_turns(exchange.body["messages"]) == [
        ("user", first_key),
        ("assistant", "first answer"),
        ("user", second_key),
    ]


def _agent(client: openai.AsyncOpenAI, instructions: str | None) -> Agent:
    model = OpenAIResponsesModel(model="chat", openai_client=client)
    return Agent(name="qa", instructions=instructions, model=model)


@pytest.mark.parametrize("instructions", [None, "You are a pirate. Answer in rhymes."])
def test_the_agents_sdk_streams_the_exact_final_output(
    graced: RunningService, stub: UpstreamStub, instructions: str | None
) -> None:
    """With `instructions`, the answer comes as well: the service leaves them
    out (its prompt decides), and says so in a header."""
    agents.set_tracing_disabled(True)
    key = marker()
    stub.reply(key, Reply(pieces=HARD_PIECES, write_slice_bytes=1))
    ignored: list[str | None] = []

    async def note_header(response: httpx.Response) -> None:
        if response.request.url.path == "/v1/responses":
            ignored.append(response.headers.get("x-qa-ignored-system-messages"))

    async def run() -> tuple[str, str]:
        hooks = {"response": [note_header]}
        async with (
            httpx.AsyncClient(timeout=TIMEOUT, event_hooks=hooks) as http,
            openai.AsyncOpenAI(
                base_url=f"{graced.url}/v1", api_key="unused", max_retries=0, http_client=http
            ) as client,
        ):
            result = Runner.run_streamed(_agent(client, instructions), key)
            deltas = [
                event.data.delta
                async for event in result.stream_events()
                if isinstance(event, RawResponsesStreamEvent)
                and isinstance(event.data, ResponseTextDeltaEvent)
            ]
        return "".join(deltas), str(result.final_output)

    streamed, final = asyncio.run(run())

    assert final == "".join(HARD_PIECES)
    assert streamed == "".join(HARD_PIECES)
    (exchange,) = stub.exchanges_for(key)
    assert _user_turns(exchange.body["messages"]) == [("user", key)]
    assert ignored == (["1"] if instructions else [None])
    if instructions:
        assert "pirate" not in str(exchange.body)


# The hang-up rule. A response nobody can come back to (`store: false`, or not
# streamed) is cancelled as soon as its client leaves, whatever
# QA_RESUME_GRACE_SECONDS says; a stored streamed one keeps its grace.


def _client(service: RunningService) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{service.url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT
    )


def _stream_then_close(
    service: RunningService, key: str, *, store: bool
) -> tuple[str, int, str, float]:
    """Stream a response, close after 3 deltas: its id, the last number seen,
    the text so far, and when the stream was closed."""
    with _client(service) as client:
        stream = client.responses.create(model="chat", input=key, stream=True, store=store)
        events = []
        for event in stream:
            events.append(event)
            if sum(e.type == DELTA for e in events) == 3:
                break
        stream.close()
        closed_at = time.monotonic()
    text = "".join(e.delta for e in events if e.type == DELTA)
    return events[0].response.id, events[-1].sequence_number, text, closed_at  # type: ignore[union-attr]


def test_an_unstored_stream_whose_client_closes_closes_the_upstream_within_a_second(
    graced: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=LONG, piece_delay=0.05))

    _, _, _, closed_at = _stream_then_close(graced, key, store=False)

    # Waited for past the default grace (5 s), so a failure says how long it took.
    exchange = stub.wait_closed(key, timeout=10.0)
    assert exchange.client_closed_at is not None
    assert exchange.client_closed_at - closed_at < 1.0
    assert exchange.pieces_written < len(LONG)


def test_a_client_that_leaves_a_stream_false_response_closes_the_upstream_within_a_second(
    graced: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=LONG, piece_delay=0.05))
    body = {"model": "chat", "input": key}

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{graced.url}/v1/responses", json=body, timeout=1.0)
    left_at = time.monotonic()

    exchange = stub.wait_closed(key, timeout=10.0)
    assert exchange.client_closed_at is not None
    assert exchange.client_closed_at - left_at < 1.0
    assert exchange.pieces_written < len(LONG)


def test_a_stored_stream_whose_client_hangs_up_keeps_its_grace_and_resumes(
    graced: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = [f"p{n} " for n in range(100)]  # 4 s at 40 ms a piece
    stub.reply(key, Reply(pieces=pieces, piece_delay=0.04))

    response_id, last, text, _ = _stream_then_close(graced, key, store=True)
    time.sleep(1.5)  # well inside the default 5 s grace, and before the answer's end
    exchange = stub.wait_for_request(key)
    still_open = exchange.client_closed_at is None
    with (
        _client(graced) as client,
        client.responses.retrieve(response_id, stream=True, starting_after=last) as stream,
    ):
        rest = list(stream)

    assert still_open
    assert text + "".join(e.delta for e in rest if e.type == DELTA) == "".join(pieces)
    assert rest[-1].type == "response.completed"
    assert len(stub.exchanges_for(key)) == 1
