"""A client that hangs up stops the spend: the upstream request is closed within 1 s."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.providers import marker
from tests.support.resume import read, seqs
from tests.support.service import RunningService
from tests.support.sse import hang_up_after
from tests.support.upstream_stub import GROQ_PATH, OPENAI_PATH, Reply, UpstreamStub

LONG_ANSWER = [f"word{n} " for n in range(400)]  # 20 s at 50 ms a piece


def _hang_up_after(
    service: RunningService, stub: UpstreamStub, key: str, kind: str
) -> tuple[float, str]:
    """Hang up after the first `kind` event, once the stub has the upstream request."""
    return hang_up_after(service.url, key, kind, lambda: stub.wait_for_request(key))


def test_client_hangup_mid_answer_closes_upstream_request(
    service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=LONG_ANSWER, piece_delay=0.05))

    hung_up_at, request_id = _hang_up_after(service, stub, key, "text")
    exchange = stub.wait_closed(key)

    assert exchange.client_closed_at - hung_up_at < 1.0
    assert not exchange.completed
    assert exchange.pieces_written < 40
    assert service.answer_record(request_id)["outcome"] == "client_disconnected"


def test_client_hangup_before_first_token_closes_upstream_request(
    service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=LONG_ANSWER, first_delay=10.0))

    hung_up_at, _ = _hang_up_after(service, stub, key, "meta")
    exchange = stub.wait_closed(key)

    assert exchange.client_closed_at - hung_up_at < 1.0
    assert exchange.pieces_written == 0


def test_a_native_client_that_hangs_up_keeps_its_answer_for_the_resume_grace(
    graced_openai_service: RunningService, stub: UpstreamStub
) -> None:
    """The contrast to a chat completion's hang-up (test_openai_dialect.py): a
    native client can come back, so its answer goes on for the default grace."""
    service = graced_openai_service
    key = marker()
    stub.reply(key, Reply(pieces=LONG_ANSWER, piece_delay=0.05))

    first = read(service.url, params={"query": key}, texts=3)
    time.sleep(1.5)  # past the 1 s in which an answer nobody can resume is closed
    exchange = stub.wait_for_request(key)
    assert exchange.client_closed_at is None, "the answer was cut before its grace"

    rest = read(
        service.url, f"/answers/{first.answer_id}/events", last_event_id=first.last_id, texts=3
    )
    ids = first.ids + rest.ids
    assert seqs(ids) == list(range(len(ids)))  # resumed exactly where it was cut
    assert [e for e in rest.events if "text" in e] == rest.events
    cancelled = httpx.post(f"{service.url}/answers/{first.answer_id}/cancel", timeout=10)
    assert cancelled.status_code == 200, cancelled.text
    stub.wait_closed(key)


@pytest.mark.parametrize(
    ("provider", "fallback"), [("openai", None), ("groq", None), ("openai", "groq")]
)
async def test_hangup_between_chunks_closes_upstream_request(
    stub: UpstreamStub, provider: str, fallback: str | None
) -> None:
    """The race a server hits by chance, made certain: the subscriber leaves
    right after a chunk is published, so the cancel lands while LangChain's
    generators sit at a yield, not inside a network read. With a fallback,
    the primary fails and the fallback's request is the one to close."""
    from qa_service.answers.connection import answer_events
    from qa_service.answers.model import AnswerRequest
    from qa_service.answers.registry import AnswerRegistry
    from qa_service.answers.run import RunTiming
    from qa_service.config import Settings
    from qa_service.core.events import AnswerMeta
    from qa_service.generation.prompts import load_prompts
    from qa_service.generation.providers import open_chat_model
    from qa_service.generation.writer import AIWriter
    from qa_service.stores.memory_answers import MemoryAnswerStore
    from tests.support.providers import provider_settings
    from tests.support.service import PROMPTS

    key = marker()
    stub.reply(key, Reply(pieces=LONG_ANSWER, piece_delay=0.02))
    if fallback is not None:
        stub.reply(key, Reply(status=500), path=OPENAI_PATH)
    env = {**provider_settings("groq", stub), **provider_settings("openai", stub)}
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        provider=provider,
        fallback_provider=fallback,
        openai_api_key=env.get("OPENAI_API_KEY"),
        openai_base_url=env.get("OPENAI_BASE_URL"),
        groq_api_key=env.get("GROQ_API_KEY"),
        groq_base_url=env.get("GROQ_BASE_URL"),
        upstream_max_retries=0,
    )
    async with open_chat_model(settings) as model:
        meta = AnswerMeta(request_id="r", provider=provider, model="m", prompt="explain")
        request = AnswerRequest(key, "explain", {})
        writer = AIWriter(model, load_prompts(PROMPTS))
        timing = RunTiming(close_seconds=1.0, lease_seconds=3.0, grace_seconds=0)
        registry = AnswerRegistry(MemoryAnswerStore(300), writer, timing)
        run = await registry.start(request, meta)
        stream = answer_events(registry, run.id, -1)
        for _ in range(4):  # meta and three texts
            await anext(stream)
        await stream.aclose()
        hung_up_at = time.monotonic()

        path = GROQ_PATH if fallback else None
        exchange = await asyncio.to_thread(stub.wait_closed, key, 5.0, path)

    assert exchange.client_closed_at - hung_up_at < 1.0
    assert not exchange.completed
