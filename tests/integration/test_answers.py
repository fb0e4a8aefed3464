"""Complete answers over real HTTP, for both providers, against the stub."""

from __future__ import annotations

import hashlib
import re

import httpx

from tests.support.providers import marker
from tests.support.service import PROMPTS, RunningService
from tests.support.sse import read_stream
from tests.support.upstream_stub import GROQ_PATH, OPENAI_PATH, Reply, UpstreamStub

EXPLAIN = PROMPTS / "explain.toml"

# Every character class that naive relays mangle, with multi-byte characters at
# piece edges. The stub also writes each event in 1-byte TCP writes, so every
# multi-byte character below arrives split across writes.
HARD_PIECES = [
    "line one\nline two\r\n",
    "bare\rCR\ttab ",
    "\"double\" 'single' back\\slash \\n not-a-newline ",
    "<script>alert('x')</script> <img src=x onerror=alert(1)> &amp; &lt; ",
    "光合作用",
    "是植物🌱",
    "👩🏽‍🔬 👨‍👩‍👧‍👦 é e\u0301 ",
    "\u2028\u2029 data: not a field\n\nid: nor this\n",
    "",
    " ",
    "end.",
]


def test_text_arrives_exactly_as_the_model_wrote_it(
    service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=HARD_PIECES, write_slice_bytes=1))

    stream = read_stream(service.url, params={"query": key})

    assert stream.status == 200
    assert stream.text == "".join(HARD_PIECES)
    assert stream.kinds[0] == "meta"
    assert stream.kinds[-1] == "done"
    assert stream.last["done"]["chars"] == len("".join(HARD_PIECES))
    # Empty pieces carry nothing and are not sent; every other piece is one event.
    assert stream.kinds.count("text") == len([p for p in HARD_PIECES if p])


def test_metadata_usage_and_event_ids(service: RunningService, stub: UpstreamStub) -> None:
    key = marker()
    usage = {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38}
    stub.reply(key, Reply(pieces=["a", "b", "c"], usage=usage, finish_reason="length"))

    stream = read_stream(service.url, params={"query": key})

    request_id = stream.headers["x-request-id"]
    provider = "groq" if _is_groq(service) else "openai"
    # Each provider's default model (docs/configuration.md), as the service asked for it.
    model = {"openai": "gpt-4o-mini", "groq": "llama-3.1-8b-instant"}[provider]
    meta = stream.events[0]["meta"]
    answer_id = meta["answer_id"]
    assert meta == {
        "request_id": request_id,
        "answer_id": answer_id,
        "provider": provider,
        "model": model,
        "prompt": "explain",
        "demo_fallback": False,
        # The shipped explain.toml's version: the sha256 of the file, 12 hex digits.
        "prompt_version": hashlib.sha256(EXPLAIN.read_bytes()).hexdigest()[:12],
    }
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", answer_id)
    assert answer_id not in request_id
    done = stream.last["done"]
    assert done["finish_reason"] == "length"
    assert done["usage"] == {"input_tokens": 31, "output_tokens": 7, "total_tokens": 38}
    assert done["chars"] == 3
    assert isinstance(done["ttft_ms"], float)
    assert done["ttft_ms"] >= 0
    assert done["duration_ms"] >= done["ttft_ms"]
    assert stream.ids == [f"{answer_id}:{n}" for n in range(len(stream.events))]
    exchange = stub.exchanges_for(key)[0]
    assert exchange.path == (GROQ_PATH if provider == "groq" else OPENAI_PATH)
    assert exchange.body["stream"] is True
    assert exchange.body["model"] == model


def _is_groq(service: RunningService) -> bool:
    return httpx.get(f"{service.url}/readyz").json()["provider"] == "groq"


def test_stream_headers_suit_proxies_and_browsers(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    stream = read_stream(openai_service.url, params={"query": marker()})

    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-accel-buffering"] == "no"


def test_caller_request_id_is_kept(openai_service: RunningService) -> None:
    request_id = "nginx-0123456789abcdef"
    with httpx.stream(
        "GET",
        f"{openai_service.url}/ai_write",
        params={"query": marker()},
        headers={"X-Request-ID": request_id},
    ) as response:
        body = response.read().decode()
    assert response.headers["x-request-id"] == request_id
    assert f'"request_id":"{request_id}"' in body
    # Event ids carry the answer id, which the service makes; never the caller's id.
    assert f"id: {request_id}:" not in body


def test_braces_in_a_query_are_literal(openai_service: RunningService, stub: UpstreamStub) -> None:
    key = marker()
    query = f"{key} what is {{concept}} and {{{{x}}}} and {{0}}?"

    stream = read_stream(openai_service.url, params={"query": query})

    assert stream.kinds[-1] == "done"
    sent = stub.exchanges_for(key)[0].body["messages"][-1]["content"]
    assert sent == ("Use 100 words to explain the following knowledge point or introduce: " + query)


def test_a_named_prompt_is_used(openai_service: RunningService, stub: UpstreamStub) -> None:
    key = marker()

    stream = read_stream(
        openai_service.url, method="POST", json_body={"query": key, "prompt": "eli5"}
    )

    assert stream.events[0]["meta"]["prompt"] == "eli5"
    messages = stub.exchanges_for(key)[0].body["messages"]
    assert messages[0]["role"] == "system"
    assert "ten-year-old" in messages[-1]["content"]


def test_model_settings_reach_the_provider(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    read_stream(openai_service.url, params={"query": key})

    body = stub.exchanges_for(key)[0].body
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0.7
    # langchain-openai sends the current field name; Groq still takes max_tokens.
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 512
    assert body["stream_options"] == {"include_usage": True}


def test_post_and_get_give_the_same_answer(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["same ", "text"]))

    got = read_stream(openai_service.url, params={"query": key})
    posted = read_stream(openai_service.url, method="POST", json_body={"query": key})

    assert got.text == posted.text == "same text"


def test_slow_first_token_is_bridged_by_keepalives_that_parsers_ignore(
    service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["late ", "but ", "whole"], first_delay=1.0, piece_delay=0.5))

    with httpx.stream("GET", f"{service.url}/ai_write", params={"query": key}) as response:
        lines = response.read().decode().splitlines()
    parsed = read_stream(service.url, params={"query": key})

    first_text = next(i for i, line in enumerate(lines) if '{"text"' in line)
    assert lines[:first_text].count(": keep-alive") >= 3
    assert parsed.kinds == ["meta", "text", "text", "text", "done"]
    assert parsed.text == "late but whole"
