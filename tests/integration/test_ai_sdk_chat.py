"""POST /api/chat and GET /api/chat/{id}/stream (the Vercel AI SDK dialect) over real
HTTP: what is refused before any upstream call, keys, limits, hang-ups, and the
chat index that a resume reads, scoped to the client and to the browser (its
cookie), in memory and in Redis.
tests/integration/test_ai_sdk_client.py drives the same routes with the SDK itself.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from httpx_sse import EventSource, connect_sse

from tests.support.metrics import delta, read_metrics
from tests.support.providers import CANCEL_ON_HANGUP, marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.service import RunningService, SharedServices, run_service, run_services
from tests.support.sse import DeadlinedResponse
from tests.support.upstream_stub import Reply, UpstreamStub

KEY_A = "qa-chat-a-k1QdTq0r7bYt2wXv5nZs8uLp"
KEY_B = "qa-chat-b-f3GhJ6kM9pR2tV5xY8zA1cE4"
SLOW_PIECES = [f"w{n} " for n in range(30)]  # 1.5 s at 50 ms a piece
# As long as useChat's own (16 characters, the shortest taken).
CHAT_ID = "chat-0123456789ab"


@dataclass
class Chat:
    status: int
    headers: httpx.Headers
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done_marker: bool = False
    body: bytes = b""

    @property
    def text(self) -> str:
        return "".join(c["delta"] for c in self.chunks if c["type"] == "text-delta")

    @property
    def types(self) -> list[str]:
        return [c["type"] for c in self.chunks]

    @property
    def shape(self) -> list[str]:
        """`types` with each run of text-delta as one: pieces that reach the
        service together go out as one (generation/batching.py)."""
        types = self.types
        return [t for i, t in enumerate(types) if t != "text-delta" or types[i - 1] != t]

    @property
    def error(self) -> dict[str, Any]:
        return json.loads(self.body)["error"]  # type: ignore[no-any-return]


def text_message(role: str, text: str) -> dict[str, Any]:
    return {"id": f"m-{marker()}", "role": role, "parts": [{"type": "text", "text": text}]}


def chat_body(question: str, chat_id: str = "", **extra: Any) -> dict[str, Any]:
    """What DefaultChatTransport sends for a first question."""
    return {
        "id": chat_id or f"chat-{marker()}",
        "messages": [text_message("user", question)],
        "trigger": "submit-message",
        **extra,
    }


@contextmanager
def browser_client(browser: httpx.Cookies | None, timeout: float) -> Iterator[httpx.Client]:
    """A client with `browser`'s cookies (a new browser, with none, if not given),
    which keeps what the service sets in them, as a browser does."""
    jar = httpx.Cookies() if browser is None else browser
    with httpx.Client(timeout=timeout, cookies=jar) as client:
        try:
            yield client
        finally:
            jar.update(client.cookies)


def read_chat(
    base_url: str,
    body: dict[str, Any] | None = None,
    *,
    chat_id: str = "",
    headers: dict[str, str] | None = None,
    timeout: float = 20.0,
    browser: httpx.Cookies | None = None,
) -> Chat:
    """POST /api/chat with `body`, or without one GET the resume of `chat_id`; all of it.

    `browser`: the cookies sent, and kept (a browser of its own if not given)."""
    deadline = time.monotonic() + timeout
    method, url = (
        ("POST", "/api/chat")
        if body is not None
        else ("GET", f"/api/chat/{quote(chat_id, safe='')}/stream")
    )
    with (
        browser_client(browser, timeout) as client,
        connect_sse(client, method, base_url + url, json=body, headers=headers or {}) as src,
    ):
        response = src.response
        chat = Chat(response.status_code, response.headers)
        if response.status_code != 200:
            chat.body = response.read()
            return chat
        for sse in EventSource(DeadlinedResponse(response, deadline)).iter_sse():  # type: ignore[arg-type]
            assert sse.event == "message", "no event names"
            assert not sse.id, "no ids"
            assert not chat.done_marker, "nothing after [DONE]"
            if sse.data == "[DONE]":
                chat.done_marker = True
            else:
                chat.chunks.append(json.loads(sse.data))
        return chat


def hang_up_at(
    base_url: str,
    body: dict[str, Any],
    chunk_type: str,
    headers: dict[str, str] | None = None,
    browser: httpx.Cookies | None = None,
) -> dict[str, Any]:
    """POST /api/chat, read up to its first chunk of `chunk_type`, and hang up; that chunk."""
    with (
        browser_client(browser, 10) as client,
        connect_sse(
            client, "POST", f"{base_url}/api/chat", json=body, headers=headers or {}
        ) as src,
    ):
        for sse in src.iter_sse():
            chunk: dict[str, Any] = json.loads(sse.data)
            if chunk["type"] == chunk_type:
                return chunk
    raise AssertionError(f"the stream ended before a {chunk_type} chunk")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- refusals -------------------------------------------------------------------------


def _refusal_cases(key: str) -> dict[str, tuple[dict[str, Any], str]]:
    """Bodies that cannot be an answer, each holding `key` so the stub would see it."""
    user = text_message("user", key)
    return {
        "no-messages": ({"id": CHAT_ID, "messages": [], "note": key}, "invalid_request"),
        "no-id": ({"messages": [user]}, "invalid_request"),
        "guessable-id": (chat_body(key, chat_id="chat-1"), "invalid_request"),
        "assistant-last": (
            {"id": CHAT_ID, "messages": [user, text_message("assistant", "a")]},
            "invalid_request",
        ),
        "system-message": (
            {"id": CHAT_ID, "messages": [text_message("system", "Be a pirate."), user]},
            "invalid_request",
        ),
        "file-part": (
            {
                "id": CHAT_ID,
                "messages": [
                    {
                        "role": "user",
                        "parts": [
                            {"type": "text", "text": key},
                            {"type": "file", "mediaType": "image/png", "url": "data:,"},
                        ],
                    }
                ],
            },
            "invalid_request",
        ),
        "tool-part": (
            {
                "id": CHAT_ID,
                "messages": [
                    {"role": "assistant", "parts": [{"type": "tool-search", "toolCallId": "t"}]},
                    user,
                ],
            },
            "invalid_request",
        ),
        "text-part-without-text": (
            {"id": CHAT_ID, "messages": [user, {"role": "user", "parts": [{"type": "text"}]}]},
            "invalid_request",
        ),
        "blank-question": (
            {
                "id": CHAT_ID,
                "messages": [user, text_message("assistant", "a"), text_message("user", " \n")],
            },
            "query_required",
        ),
        "question-too-long": (chat_body(key + "x" * 4000), "query_too_long"),
        "unknown-prompt": (chat_body(key, prompt="nope"), "unknown_prompt"),
        "history-too-long": (
            {"id": CHAT_ID, "messages": [text_message("user", "h")] * 51 + [user]},
            "history_too_long",
        ),
    }


@pytest.mark.parametrize("case", list(_refusal_cases("")))
def test_a_body_that_cannot_be_an_answer_is_refused_before_any_upstream_call(
    openai_service: RunningService, stub: UpstreamStub, case: str
) -> None:
    key = f"refused {marker()}"
    body, code = _refusal_cases(key)[case]
    before = read_metrics(openai_service.url)

    response = httpx.post(f"{openai_service.url}/api/chat", json=body)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert key not in response.text  # a refusal never echoes the question
    assert (
        delta(
            before,
            read_metrics(openai_service.url),
            "qa_requests_total",
            code=code,
            outcome="refused",
        )
        == 1
    )
    assert stub.exchanges_for(key) == []


def test_a_system_message_is_refused_saying_why(openai_service: RunningService) -> None:
    body = {"id": CHAT_ID, "messages": [text_message("system", "x"), text_message("user", "q")]}

    response = httpx.post(f"{openai_service.url}/api/chat", json=body)

    assert "system message" in response.json()["error"]["message"]


def test_a_body_that_is_not_json_is_refused_415(openai_service: RunningService) -> None:
    response = httpx.post(
        f"{openai_service.url}/api/chat", content=b"{}", headers={"content-type": "text/plain"}
    )

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


# --- what is taken --------------------------------------------------------------------


def test_the_conversation_reaches_the_provider_as_ai_write_sends_it(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    """Skipped parts, unknown fields, and an answer without text are left out; the
    prompt comes from `prompt`. The provider gets what POST /ai_write would send."""
    key, twin_key = marker(), marker()
    question = f'{key} "quoted" 光合作用 🌱\r\n'
    twin = f'{twin_key} "quoted" 光合作用 🌱\r\n'
    earlier = [
        {"role": "user", "content": "What is 糖?"},
        {"role": "assistant", "content": "A sugar.\nIt is sweet."},
    ]
    messages = [
        {
            "id": "u1",
            "role": "user",
            "metadata": {"at": 1},
            "parts": [{"type": "text", "text": "What is 糖?"}],
        },
        {
            "id": "a1",
            "role": "assistant",
            "parts": [
                {"type": "step-start"},
                {"type": "reasoning", "text": "thinking", "state": "done"},
                {"type": "text", "text": "A sugar.", "state": "done"},
                {"type": "source-url", "sourceId": "s", "url": "https://example.com"},
                {"type": "text", "text": "It is sweet.", "providerMetadata": {}},
                {"type": "data-weather", "data": {"c": 20}},
            ],
        },
        {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "Never answered."}]},
        {"id": "a2", "role": "assistant", "parts": [{"type": "step-start"}]},
        text_message("user", "Once more?"),
        text_message("assistant", "Sweet."),
        text_message("user", question),
    ]
    earlier += [
        {"role": "user", "content": "Never answered."},
        {"role": "user", "content": "Once more?"},
        {"role": "assistant", "content": "Sweet."},
    ]
    body = {
        "id": CHAT_ID,
        "messages": messages,
        "trigger": "submit-message",
        "prompt": "eli5",
        "model": "x",
    }

    chat = read_chat(openai_service.url, body)
    native = httpx.post(
        f"{openai_service.url}/ai_write",
        json={"query": twin, "prompt": "eli5", "history": earlier},
    )

    assert chat.status == native.status_code == 200
    sent = stub.wait_ended(key).body["messages"]
    twin_sent = stub.wait_ended(twin_key).body["messages"]
    assert sent[:-1] == twin_sent[:-1]  # the prompt's system part, then the history
    assert len(sent) == 7
    assert sent[-1]["content"].replace(question, twin) == twin_sent[-1]["content"]
    assert question in sent[-1]["content"]


def test_a_complete_answer_is_the_ui_message_stream(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    question = marker()
    stub.reply(question, Reply(pieces=["Hello", ", ", "world."]))

    chat = read_chat(openai_service.url, chat_body(question))

    assert chat.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert chat.headers["content-type"].startswith("text/event-stream")
    assert chat.shape == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    assert chat.chunks[0] == {"type": "start", "messageId": chat.chunks[0]["messageId"]}
    assert chat.chunks[-1] == {"type": "finish", "finishReason": "stop"}
    assert chat.text == "Hello, world."
    assert chat.done_marker


def test_a_failure_mid_answer_is_an_error_chunk_with_our_code_never_the_providers_text(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    question = marker()
    secret = "provider-internal-detail"
    stub.reply(
        question,
        Reply(
            pieces=["Half ", "of it"], cut_after_pieces=1, error_body={"error": {"message": secret}}
        ),
    )

    chat = read_chat(openai_service.url, chat_body(question))

    assert chat.types == ["start", "start-step", "text-start", "text-delta", "error"]
    assert chat.chunks[-1] == {
        "type": "error",
        "errorText": "upstream_interrupted: The model provider's stream was cut off.",
    }
    assert chat.done_marker


def test_hanging_up_closes_the_upstream_request(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    question = marker()
    stub.reply(question, Reply(pieces=["a", "b"], stall_after_pieces=1))

    hang_up_at(openai_service.url, chat_body(question), "text-delta")
    hung_up = time.monotonic()

    closed = stub.wait_closed(question, timeout=5)
    assert closed.client_closed_at is not None
    assert closed.client_closed_at - hung_up < 1.0


def test_over_the_rate_limit_is_429_before_any_upstream_call(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    settings = {
        **provider_settings("openai", stub),
        **CANCEL_ON_HANGUP,
        "QA_RATE_LIMIT": "2/minute",
    }
    with run_service(settings, tmp_path) as service:
        allowed = [read_chat(service.url, chat_body(marker())) for _ in range(2)]
        refused_question = marker()
        refused = httpx.post(f"{service.url}/api/chat", json=chat_body(refused_question))

    assert [chat.status for chat in allowed] == [200, 200]
    assert [chat.headers["x-ratelimit-remaining-requests"] for chat in allowed] == ["1", "0"]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert stub.exchanges_for(refused_question) == []


# --- keys and the chat index ----------------------------------------------------------


@dataclass
class Pair:
    a: RunningService
    b: RunningService


@pytest.fixture(
    scope="module", params=[pytest.param("redis", marks=pytest.mark.replicas), "memory"]
)
def keyed_pair(request: pytest.FixtureRequest, stub: UpstreamStub, workdir: Path) -> Iterator[Pair]:
    """With Redis two replicas (a resume lands on the other), in memory one process."""
    with ExitStack() as stack:
        settings = {
            **provider_settings("openai", stub),
            "QA_API_KEYS": f"{KEY_A},{KEY_B}",
            "QA_RESUME_GRACE_SECONDS": "3",
        }
        if request.param == "redis":
            settings["QA_REDIS_URL"] = stack.enter_context(run_redis(workdir)).url
        count = 2 if request.param == "redis" else 1
        a, *others = stack.enter_context(run_services([settings] * count, workdir))
        yield Pair(a, others[0] if others else a)


def test_without_a_key_nothing_starts_and_nothing_resumes(
    keyed_pair: Pair, stub: UpstreamStub
) -> None:
    question = marker()

    started = httpx.post(f"{keyed_pair.a.url}/api/chat", json=chat_body(question))
    resumed = httpx.get(f"{keyed_pair.b.url}/api/chat/any/stream")

    assert started.status_code == resumed.status_code == 401
    assert started.json()["error"]["code"] == resumed.json()["error"]["code"] == "unauthorized"
    assert stub.exchanges_for(question) == []


def test_a_chat_resumes_from_its_start_for_its_browser_only_then_204(
    keyed_pair: Pair, stub: UpstreamStub
) -> None:
    question = marker()
    stub.reply(question, Reply(pieces=SLOW_PIECES, piece_delay=0.05))
    chat_id = "the same id/for every client"  # any characters, a slash too
    browser = httpx.Cookies()

    # Some text arrived, and the page reloads.
    hang_up_at(keyed_pair.a.url, chat_body(question, chat_id), "text-delta", bearer(KEY_A), browser)
    other_client = read_chat(keyed_pair.b.url, chat_id=chat_id, headers=bearer(KEY_B))
    # Another user of the same app's key, who learnt the chat id: another browser.
    other_user = read_chat(keyed_pair.b.url, chat_id=chat_id, headers=bearer(KEY_A))
    resumed = read_chat(keyed_pair.b.url, chat_id=chat_id, headers=bearer(KEY_A), browser=browser)
    after_the_end = read_chat(
        keyed_pair.b.url, chat_id=chat_id, headers=bearer(KEY_A), browser=browser
    )

    assert other_client.status == 204
    assert other_user.status == 204
    assert resumed.status == 200
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert resumed.types[:2] == ["start", "start-step"]
    assert resumed.text == "".join(SLOW_PIECES)
    assert resumed.chunks[-1] == {"type": "finish", "finishReason": "stop"}
    assert after_the_end.status == 204
    assert len(stub.exchanges_for(question)) == 1


def test_without_keys_a_chat_resumes_for_its_browser_not_for_others_at_its_address(
    shared_services: SharedServices, stub: UpstreamStub
) -> None:
    """Keys off, a client is an address: every browser behind one NAT shares it."""
    service = shared_services.one(
        {**provider_settings("openai", stub), "QA_RESUME_GRACE_SECONDS": "3"}
    )
    question = marker()
    stub.reply(question, Reply(pieces=SLOW_PIECES, piece_delay=0.05))
    chat_id = f"chat-{marker()}"
    browser = httpx.Cookies()

    hang_up_at(service.url, chat_body(question, chat_id), "text-delta", browser=browser)
    other_browser = read_chat(service.url, chat_id=chat_id)
    resumed = read_chat(service.url, chat_id=chat_id, browser=browser)

    assert other_browser.status == 204
    assert resumed.status == 200
    assert resumed.text == "".join(SLOW_PIECES)


def test_the_resume_cookie_is_the_browsers_alone_and_kept_across_its_chats(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    with httpx.Client(base_url=openai_service.url) as browser:
        first = browser.post("/api/chat", json=chat_body(marker()))
        again = browser.post("/api/chat", json=chat_body(marker()))
    # Over https at a proxy QA_FORWARDED_ALLOW_IPS trusts (127.0.0.1, by default).
    https = httpx.post(
        f"{openai_service.url}/api/chat",
        json=chat_body(marker()),
        headers={"X-Forwarded-Proto": "https"},
    )

    cookie = SimpleCookie(first.headers["set-cookie"])["qa_chat"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", cookie.value)
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "strict"
    assert cookie["path"] == "/api/chat"
    assert int(cookie["max-age"]) > 0
    assert not cookie["secure"]
    # One token a browser: a second chat refreshes it, never piles another on.
    assert SimpleCookie(again.headers["set-cookie"])["qa_chat"].value == cookie.value
    assert SimpleCookie(https.headers["set-cookie"])["qa_chat"]["secure"] is True


def test_a_later_answer_of_the_chat_replaces_the_earlier_one(
    keyed_pair: Pair, stub: UpstreamStub
) -> None:
    first, second = marker(), marker()
    stub.reply(second, Reply(pieces=SLOW_PIECES, piece_delay=0.05))
    chat_id = f"chat-{marker()}"

    browser = httpx.Cookies()

    done = read_chat(
        keyed_pair.a.url, chat_body(first, chat_id), headers=bearer(KEY_A), browser=browser
    )
    start = hang_up_at(
        keyed_pair.a.url, chat_body(second, chat_id), "start", bearer(KEY_A), browser
    )
    resumed = read_chat(keyed_pair.b.url, chat_id=chat_id, headers=bearer(KEY_A), browser=browser)

    assert done.status == 200
    assert resumed.chunks[0] == start
    assert resumed.text == "".join(SLOW_PIECES)


@pytest.mark.replicas
def test_a_chat_index_that_cannot_be_written_refuses_503_and_stops_the_answer(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    """Redis takes the answer but refuses the chat's key (an ACL stands in for a
    Redis that fails at that moment): nothing will read the answer, so it stops."""
    question = marker()
    stub.reply(question, Reply(pieces=SLOW_PIECES, piece_delay=0.05))
    with run_redis(tmp_path) as redis:
        redis.client().acl_setuser(
            "svc",
            enabled=True,
            passwords=["+not-a-real-secret"],
            keys=["qa:answer:*", "qa:limits*", "qa:slots:*", "qa:ticket:*"],
            channels=["*"],
            categories=["+@all"],
        )
        settings = {
            **provider_settings("openai", stub),
            "QA_REDIS_URL": f"redis://svc:not-a-real-secret@127.0.0.1:{redis.port}/0",
            # Long: without the stop, the answer would run on to its end.
            "QA_RESUME_GRACE_SECONDS": "30",
        }
        with run_service(settings, tmp_path) as service:
            response = httpx.post(f"{service.url}/api/chat", json=chat_body(question))
            record = service.answer_record(response.headers["x-request-id"])

    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"
    assert (record["outcome"], record["error_code"]) == ("error", "store_unavailable")
    # Stopped at once: the provider never wrote the whole answer.
    assert not any(exchange.completed for exchange in stub.exchanges_for(question))
