"""The answer cache (issue 22; docs/operations.md "Caching"): one provider call however
many ask the same question, and every client's stream exactly the original's.

`cached` runs on each store in turn: `memory` is one process, `redis` two sharing a
real redis-server (`a` and `b`: asked on one, served or joined on the other). Each
test asks questions of its own (a marker each), so the module's services are shared
without one test hitting another's answers. A test that needs other settings for
good (keys, a scope, a tiny bound, limits) starts a service of its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.daemon import wait_until
from tests.support.metrics import delta, read_metrics
from tests.support.providers import marker, provider_settings
from tests.support.redis_server import RedisServer, run_redis
from tests.support.resume import AnswerIdWatch, Read, read, seqs
from tests.support.service import (
    REPO,
    RunningService,
    SharedServices,
    run_service,
    run_services,
)
from tests.support.upstream_stub import Reply, UpstreamStub

GRACE = 1.5
USAGE = {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38}
PIECES = [f"p{n} " for n in range(12)]
FREE = {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}
# Long enough that every joiner comes while it is written: 3 s at 50 ms a piece.
SLOW = [f"s{n} " for n in range(60)]
# Long enough that it would not finish on its own within any test's deadline.
LONG = [f"long{n} " for n in range(2000)]


def cache_settings(stub: UpstreamStub, **extra: str) -> dict[str, str]:
    return {
        **provider_settings("openai", stub),
        "QA_ANSWER_CACHE_TTL_SECONDS": "300",
        "QA_RESUME_GRACE_SECONDS": str(GRACE),
        **extra,
    }


@dataclass
class Cached:
    a: RunningService
    # The other replica with Redis; `a` itself in memory.
    b: RunningService
    redis: RedisServer | None


@pytest.fixture(
    scope="module", params=[pytest.param("redis", marks=pytest.mark.replicas), "memory"]
)
def cached(request: pytest.FixtureRequest, stub: UpstreamStub, workdir: Path) -> Iterator[Cached]:
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(workdir)) if request.param == "redis" else None
        extra = {} if redis is None else {"QA_REDIS_URL": redis.url}
        count = 1 if redis is None else 2
        a, *others = stack.enter_context(
            run_services([cache_settings(stub, **extra)] * count, workdir)
        )
        yield Cached(a, others[0] if others else a, redis)


def ask(
    url: str,
    query: str,
    *,
    prompt: str | None = None,
    headers: dict[str, str] | None = None,
    **more: Any,
) -> Read:
    params = {"query": query} if prompt is None else {"query": query, "prompt": prompt}
    return read(url, params=params, headers=headers, **more)


def outcome(answer: Read) -> str:
    """What the cache did, as the header says it; the meta and done must agree."""
    assert answer.status == 200, answer.body
    said = answer.headers["x-qa-cache"]
    assert answer.events[0]["meta"]["cache"] == said
    if "done" in answer.last:
        assert answer.last["done"]["cache"] == said
    return said


def pieces(answer: Read) -> list[str]:
    return [e["text"] for e in answer.events if "text" in e]


def assert_whole(answer: Read, expected: list[str]) -> None:
    assert "done" in answer.last, answer.last
    assert answer.text == "".join(expected)
    assert answer.last["done"]["finish_reason"] == "stop"


def error_code(answer: Read) -> str:
    assert "error" in answer.last, answer.last
    return str(answer.last["error"]["code"])


def kept(url: str, query: str, expected: list[str], **more: Any) -> Read:
    """A hit for `query`, once its first answer's recording is kept.

    The recording is stored as the shared answer's bookkeeping, just after
    its last event: a question asked at that moment still joins it (exact,
    but a `join`). Joins are asked again until one is a hit; a miss fails.
    """
    deadline = time.monotonic() + 10
    while True:
        answer = ask(url, query, **more)
        assert_whole(answer, expected)
        said = outcome(answer)
        if said == "hit":
            return answer
        assert said == "join", said
        assert time.monotonic() < deadline, "the answer was never kept"


def cancel(url: str, answer_id: str) -> None:
    response = httpx.post(f"{url}/answers/{answer_id}/cancel", timeout=10)
    assert response.status_code == 200, response.text


# 1


def test_asked_twice_the_second_replays_the_same_pieces_and_usage_with_no_call(
    cached: Cached, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, piece_delay=0.01, usage=USAGE))

    first = ask(cached.a.url, key)
    second = kept(cached.a.url, key, PIECES)

    assert outcome(first) == "miss"
    assert outcome(second) == "hit"
    assert_whole(first, PIECES)
    assert pieces(second) == pieces(first)
    assert second.last["done"]["usage"] == first.last["done"]["usage"]
    assert first.last["done"]["usage"]["output_tokens"] == USAGE["completion_tokens"]
    assert second.answer_id != first.answer_id  # every client's answer is its own
    assert len(stub.exchanges_for(key)) == 1
    request_id = first.events[0]["meta"]["request_id"]
    assert cached.a.answer_record(request_id, cache="source")["outcome"] == "complete"
    assert cached.a.answer_record(request_id, cache="miss")["outcome"] == "complete"


# 2


def test_no_cache_asks_afresh_and_keeps_the_new_answer(cached: Cached, stub: UpstreamStub) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["old ", "answer"]))
    old = ask(cached.a.url, key)
    kept(cached.a.url, key, ["old ", "answer"])
    stub.reply(key, Reply(pieces=["new ", "answer"]))

    fresh = ask(cached.a.url, key, headers={"Cache-Control": "no-cache"})
    after = kept(cached.a.url, key, ["new ", "answer"])

    assert outcome(old) == "miss"
    assert outcome(fresh) == "bypass"
    assert_whole(fresh, ["new ", "answer"])
    assert outcome(after) == "hit"
    assert len(stub.exchanges_for(key)) == 2


def test_no_store_asks_afresh_and_keeps_nothing(cached: Cached, stub: UpstreamStub) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES))

    unkept = [ask(cached.a.url, key, headers={"Cache-Control": "no-store"}) for _ in range(2)]
    plain = ask(cached.a.url, key)

    assert [outcome(a) for a in unkept] == ["bypass", "bypass"]
    for answer in unkept:
        assert_whole(answer, PIECES)
    assert outcome(plain) == "miss"  # nothing was kept for it to hit
    assert len(stub.exchanges_for(key)) == 3
    # As a miss: the provider call's line, and the client's.
    request_id = unkept[0].events[0]["meta"]["request_id"]
    assert cached.a.answer_record(request_id, cache="source")["outcome"] == "complete"
    assert cached.a.answer_record(request_id, cache="bypass")["outcome"] == "complete"


# 3


def test_another_prompt_misses(cached: Cached, stub: UpstreamStub) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES))

    explained = ask(cached.a.url, key, prompt="explain")
    kept(cached.a.url, key, PIECES, prompt="explain")
    simpler = ask(cached.a.url, key, prompt="eli5")

    assert outcome(explained) == "miss"
    assert outcome(simpler) == "miss"
    assert len(stub.exchanges_for(key)) == 2


# 4


def test_twenty_identical_questions_at_once_make_one_call_and_twenty_exact_streams(
    cached: Cached, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=SLOW, first_delay=0.5, piece_delay=0.05, usage=USAGE))

    with ThreadPoolExecutor(20) as pool:
        urls = [cached.a.url, cached.b.url] * 10
        answers = [f.result() for f in [pool.submit(ask, url, key) for url in urls]]

    outcomes = [outcome(a) for a in answers]
    assert outcomes.count("miss") == 1, outcomes
    assert set(outcomes) <= {"miss", "join", "hit"}, outcomes
    assert outcomes.count("join") >= 1, outcomes  # they overlapped
    for answer in answers:
        assert_whole(answer, SLOW)
        assert pieces(answer) == pieces(answers[0])
        assert answer.last["done"]["usage"] == answers[0].last["done"]["usage"]
    assert len({a.answer_id for a in answers}) == 20
    assert len(stub.exchanges_for(key)) == 1


# 5


def test_joiners_hanging_up_or_cancelling_and_the_askers_cancel_leave_the_rest_whole(
    cached: Cached, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=SLOW, piece_delay=0.05))

    with ThreadPoolExecutor(5) as pool:
        asker_id, cancelled_id = AnswerIdWatch(), AnswerIdWatch()
        asker = pool.submit(ask, cached.a.url, key, on_event=asker_id)
        stub.wait_for_request(key)
        hanging = pool.submit(ask, cached.b.url, key, texts=2)
        cancelled = pool.submit(ask, cached.b.url, key, on_event=cancelled_id)
        watches = [AnswerIdWatch(), AnswerIdWatch()]
        whole = [
            pool.submit(ask, url, key, on_event=watch)
            for url, watch in zip((cached.a.url, cached.b.url), watches, strict=True)
        ]
        for watch in watches:
            watch.wait()  # joined before anyone leaves
        cancel(cached.b.url, cancelled_id.wait())
        cancel(cached.a.url, asker_id.wait())
        results = [f.result() for f in (asker, hanging, cancelled, *whole)]

    first, hung_up, cancelled_one, *rest = results
    assert [outcome(r) for r in results] == ["miss", "join", "join", "join", "join"]
    assert error_code(first) == "cancelled"
    assert error_code(cancelled_one) == "cancelled"
    assert len(pieces(hung_up)) >= 2
    assert "done" not in hung_up.last
    for answer in rest:
        assert_whole(answer, SLOW)
        assert seqs(answer.ids) == list(range(len(answer.ids)))
    assert pieces(rest[0]) == pieces(rest[1])
    assert len(stub.exchanges_for(key)) == 1
    assert stub.wait_ended(key, timeout=30).completed


def test_when_every_reader_has_left_the_upstream_request_is_closed_after_the_grace(
    cached: Cached, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=LONG, piece_delay=0.05))

    with ThreadPoolExecutor(2) as pool:
        watch = AnswerIdWatch()
        asker = pool.submit(ask, cached.a.url, key, texts=3, on_event=watch)
        watch.wait()
        stub.wait_for_request(key)
        joiner = ask(cached.b.url, key, texts=1)
        first = asker.result()
    last_read = max(first.arrived[-1], joiner.arrived[-1])  # each hung up just after

    exchange = stub.wait_closed(key, timeout=GRACE + 20)

    assert [outcome(first), outcome(joiner)] == ["miss", "join"]
    assert not exchange.completed
    assert exchange.client_closed_at is not None
    # Not at once: each reader's answer waits out its resume grace first. (A
    # lower bound only, and a loose one: load can only make the wait longer.)
    assert exchange.client_closed_at - last_read >= GRACE / 2
    assert len(stub.exchanges_for(key)) == 1


def _chat_then_hang_up(url: str, question: str, chunks: int) -> tuple[str, float]:
    """A chat completion, streamed by the official SDK and closed after
    `chunks` chunks. Returns what the cache did, and when the client closed."""
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": question}], stream=True
        )
        stream = raw.parse()
        for seen, _chunk in enumerate(stream, 1):
            if seen == chunks:
                break
        stream.close()
        return raw.headers["x-qa-cache"], time.monotonic()


def test_a_chat_completion_alone_on_its_provider_call_closes_it_within_a_second_of_leaving(
    stub: UpstreamStub, shared_services: SharedServices
) -> None:
    """With the default resume grace: a chat-completions client cannot resume,
    and nobody else reads the call, so nobody is left to pay it for."""
    service = shared_services.one(
        {**provider_settings("openai", stub), "QA_ANSWER_CACHE_TTL_SECONDS": "300"}
    )
    key = marker()
    stub.reply(key, Reply(pieces=LONG, piece_delay=0.05))

    said, closed_at = _chat_then_hang_up(service.url, key, chunks=3)

    exchange = stub.wait_closed(key, timeout=10)
    assert said == "miss"
    assert exchange.client_closed_at is not None
    assert exchange.client_closed_at - closed_at < 1.0
    assert not exchange.completed


def test_a_chat_completion_that_hangs_up_leaves_the_other_readers_call_whole(
    cached: Cached, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=SLOW, piece_delay=0.05))

    with ThreadPoolExecutor(1) as pool:
        # The chat completion's `model` is the prompt: the same question.
        asker = pool.submit(ask, cached.a.url, key, prompt="chat")
        stub.wait_for_request(key)
        said, _ = _chat_then_hang_up(cached.b.url, key, chunks=3)
        first = asker.result()

    assert said == "join"
    assert outcome(first) == "miss"
    assert_whole(first, SLOW)
    assert len(stub.exchanges_for(key)) == 1
    assert stub.wait_ended(key, timeout=30).completed


# 6


@pytest.mark.parametrize(
    "reply",
    [
        Reply(pieces=["partial ", "text ", "lost"], cut_after_pieces=2),
        Reply(status=500),
        Reply(pieces=["cut ", "short"], finish_reason="length"),
    ],
    ids=["failed-mid-stream", "failed-before-text", "cut-at-the-cap"],
)
def test_an_answer_that_did_not_finish_normally_is_not_served_again(
    cached: Cached, stub: UpstreamStub, reply: Reply
) -> None:
    key = marker()
    stub.reply(key, reply)

    first = ask(cached.a.url, key)
    # Asked until a new call is made: a question asked as the first one ends
    # still joins it (and ends as it did); none may ever be a hit.
    deadline = time.monotonic() + 10
    while len(stub.exchanges_for(key)) < 2:
        again = ask(cached.b.url, key)
        assert outcome(again) in ("miss", "join")
        assert time.monotonic() < deadline, "no new provider call"

    assert outcome(first) == "miss"
    assert outcome(again) == "miss"
    if reply.finish_reason == "length" and reply.status == 200:
        assert again.last["done"]["finish_reason"] == "length"
    else:
        assert error_code(again) == error_code(first)


def test_joiners_of_a_failed_answer_all_see_its_error_and_nothing_is_kept(
    cached: Cached, stub: UpstreamStub
) -> None:
    key = marker()
    # 30 pieces 0.1 s apart: 3 s for four joiners to attach on a busy machine.
    stub.reply(key, Reply(pieces=SLOW, piece_delay=0.1, cut_after_pieces=30))

    with ThreadPoolExecutor(5) as pool:
        watch = AnswerIdWatch()
        asker = pool.submit(ask, cached.a.url, key, on_event=watch)
        watch.wait()
        stub.wait_for_request(key)
        joiners = [pool.submit(ask, url, key) for url in (cached.a.url, cached.b.url) * 2]
        answers = [asker.result(), *(f.result() for f in joiners)]
    later = ask(cached.a.url, key)

    assert [outcome(a) for a in answers] == ["miss"] + ["join"] * 4
    assert {error_code(a) for a in answers} == {"upstream_interrupted"}
    assert outcome(later) == "miss"
    assert len(stub.exchanges_for(key)) == 2


# 8


def test_asked_on_one_replica_the_question_hits_on_the_other(
    cached: Cached, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, usage=USAGE))

    first = ask(cached.a.url, key)
    other = kept(cached.b.url, key, PIECES)

    assert outcome(first) == "miss"
    assert pieces(other) == pieces(first)
    assert other.last["done"]["usage"] == first.last["done"]["usage"]
    assert len(stub.exchanges_for(key)) == 1


def test_a_question_asked_on_one_replica_joins_the_answer_written_on_the_other(
    cached: Cached, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=SLOW, piece_delay=0.05))

    with ThreadPoolExecutor(1) as pool:
        watch = AnswerIdWatch()
        asker = pool.submit(ask, cached.a.url, key, on_event=watch)
        watch.wait()
        stub.wait_for_request(key)
        joiner = ask(cached.b.url, key)
        first = asker.result()

    assert [outcome(first), outcome(joiner)] == ["miss", "join"]
    assert_whole(joiner, SLOW)
    assert pieces(joiner) == pieces(first)
    assert len(stub.exchanges_for(key)) == 1


# 10


def test_the_openai_sdk_gets_a_hit_with_the_exact_text(cached: Cached, stub: UpstreamStub) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=PIECES, usage=USAGE))

    def complete() -> tuple[str, list[str]]:
        with openai.OpenAI(
            base_url=f"{cached.a.url}/v1", api_key="unused", max_retries=0, timeout=30
        ) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="chat",
                messages=[{"role": "user", "content": key}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = list(raw.parse())
        texts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == USAGE["completion_tokens"]
        return raw.headers["x-qa-cache"], texts

    first_said, first = complete()
    deadline = time.monotonic() + 10
    while (said := complete())[0] == "join":
        assert time.monotonic() < deadline, "the answer was never kept"

    assert first_said == "miss"
    assert said[0] == "hit"
    assert "".join(said[1]) == "".join(first) == "".join(PIECES)
    assert said[1] == first
    assert len(stub.exchanges_for(key)) == 1


# The service's own JS client, under node's real fetch (the demo page uses it):
# each question asked with `cache` from the meta event, printed as JSON lines.
JS_CLIENT_ASKS = """
import { streamAnswer } from "%s";
const [baseUrl, question, times] = process.argv.slice(1);
for (let n = 0; n < Number(times); n++) {
  let cache;
  const onMeta = (meta) => { cache = meta.cache; };
  const result = await streamAnswer(question, { baseUrl, onMeta });
  console.log(JSON.stringify({ cache, status: result.status, text: result.text }));
}
"""


def test_the_services_own_js_client_gets_hits(cached: Cached, stub: UpstreamStub) -> None:
    """qa-client.js, as the page runs it: a fetch with `cache: "no-store"` made
    browsers and node send `Cache-Control: no-cache`, a bypass every time."""
    node = shutil.which("node")
    assert node is not None, "node is needed (scripts/system-deps.sh installs it)"
    key = marker()
    stub.reply(key, Reply(pieces=PIECES))
    script = JS_CLIENT_ASKS % (REPO / "src" / "qa_service" / "static" / "qa-client.js").as_uri()

    asked = subprocess.run(
        [node, "--input-type=module", "-e", script, cached.a.url, key, "4"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )

    assert asked.returncode == 0, asked.stderr
    answers = [json.loads(line) for line in asked.stdout.splitlines()]
    assert {(a["status"], a["text"]) for a in answers} == {("done", "".join(PIECES))}
    said = [a["cache"] for a in answers]
    # The second may still join the first as it ends; one after it is a hit.
    assert said[0] == "miss", said
    assert "hit" in said, said
    assert set(said[1:]) <= {"join", "hit"}, said
    assert len(stub.exchanges_for(key)) == 1


# 11


def test_a_hit_resumed_mid_stream_continues_exactly(cached: Cached, stub: UpstreamStub) -> None:
    key = marker()
    # Paced, so the recording keeps the pieces apart (chunks that reach the
    # service together are merged into one).
    stub.reply(key, Reply(pieces=PIECES, piece_delay=0.02))
    ask(cached.a.url, key)
    whole = kept(cached.a.url, key, PIECES)

    start = ask(cached.a.url, key, texts=3)
    rest = ask(cached.b.url, key, last_event_id=start.last_id)

    assert outcome(start) == "hit"
    assert len(pieces(whole)) > 3, pieces(whole)
    assert rest.status == 200, rest.status
    assert "meta" not in rest.events[0]
    assert rest.last["done"]["cache"] == "hit"
    assert start.text + rest.text == "".join(PIECES)
    assert seqs(start.ids + rest.ids) == list(range(len(start.ids) + len(rest.ids)))
    assert {i.rsplit(":", 1)[0] for i in start.ids + rest.ids} == {start.answer_id}
    assert len(stub.exchanges_for(key)) == 1


def test_a_join_resumed_mid_stream_continues_exactly(cached: Cached, stub: UpstreamStub) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=SLOW, piece_delay=0.05))

    with ThreadPoolExecutor(1) as pool:
        watch = AnswerIdWatch()
        asker = pool.submit(ask, cached.a.url, key, on_event=watch)
        watch.wait()
        stub.wait_for_request(key)
        start = ask(cached.b.url, key, texts=3)
        rest = ask(cached.a.url, key, last_event_id=start.last_id)
        first = asker.result()

    assert outcome(start) == "join"
    assert "meta" not in rest.events[0]
    assert_whole(first, SLOW)
    assert start.text + rest.text == "".join(SLOW)
    assert pieces(start) + pieces(rest) == pieces(first)
    assert seqs(start.ids + rest.ids) == list(range(len(start.ids) + len(rest.ids)))
    assert {i.rsplit(":", 1)[0] for i in start.ids + rest.ids} == {start.answer_id}
    assert len(stub.exchanges_for(key)) == 1


# 12


def test_every_outcome_is_counted_on_metrics(cached: Cached, stub: UpstreamStub) -> None:
    key, fresh = marker(), marker()
    # 60 pieces 0.05 s apart: 3 s for the joiner to attach on a busy machine.
    stub.reply(key, Reply(pieces=SLOW, piece_delay=0.05, usage=USAGE))
    stub.reply(fresh, Reply(pieces=PIECES, usage=USAGE))
    url = cached.a.url
    before = read_metrics(url)

    with ThreadPoolExecutor(1) as pool:
        watch = AnswerIdWatch()
        asker = pool.submit(ask, url, key, on_event=watch)
        watch.wait()
        stub.wait_for_request(key)
        joined = ask(url, key)
        asker.result()
    hit = kept(url, key, SLOW)
    bypassed = ask(url, fresh, headers={"Cache-Control": "no-cache"})
    after = read_metrics(url)

    assert [outcome(joined), outcome(hit), outcome(bypassed)] == ["join", "hit", "bypass"]
    counted = {
        said: delta(before, after, "qa_answer_cache_total", outcome=said)
        for said in ("miss", "join", "hit", "bypass")
    }
    # `kept` may have asked more than once: every ask before the hit was a join.
    assert (counted["miss"], counted["hit"], counted["bypass"]) == (1, 1, 1), counted
    assert counted["join"] >= 1, counted
    # The provider's metrics count its two calls (the miss's, the bypass's), once each.
    output_tokens = delta(before, after, "qa_usage_tokens_total", kind="output")
    assert output_tokens == 2 * USAGE["completion_tokens"]
    assert delta(before, after, "qa_tokens_relayed_total") == len(pieces(hit)) + len(
        pieces(bypassed)
    )


# 7


KEY_A = "qa-cache-test-key-a-0123456789"
KEY_B = "qa-cache-test-key-b-0123456789"


@pytest.fixture(scope="module")
def keyed(stub: UpstreamStub, workdir: Path) -> Iterator[dict[str, RunningService]]:
    """A service per scope, each with two API keys (two clients)."""
    keys = {"QA_API_KEYS": f"{KEY_A},{KEY_B}"}
    scopes = ("client", "global")
    settings = [cache_settings(stub, QA_ANSWER_CACHE_SCOPE=s, **keys) for s in scopes]
    with run_services(settings, workdir) as services:
        yield dict(zip(scopes, services, strict=True))


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_two_clients_do_not_share_answers_under_client_scope(
    keyed: dict[str, RunningService], stub: UpstreamStub
) -> None:
    service, key = keyed["client"], marker()
    stub.reply(key, Reply(pieces=PIECES))

    first = ask(service.url, key, headers=_as(KEY_A))
    kept(service.url, key, PIECES, headers=_as(KEY_A))
    other = ask(service.url, key, headers=_as(KEY_B))

    assert [outcome(first), outcome(other)] == ["miss", "miss"]
    assert_whole(other, PIECES)
    assert len(stub.exchanges_for(key)) == 2


def test_two_clients_do_not_join_each_others_answer_under_client_scope(
    keyed: dict[str, RunningService], stub: UpstreamStub
) -> None:
    service, key = keyed["client"], marker()
    stub.reply(key, Reply(pieces=SLOW, piece_delay=0.05))

    with ThreadPoolExecutor(1) as pool:
        watch = AnswerIdWatch()
        asker = pool.submit(ask, service.url, key, headers=_as(KEY_A), on_event=watch)
        watch.wait()
        stub.wait_for_request(key)
        other = ask(service.url, key, headers=_as(KEY_B))
        first = asker.result()

    assert [outcome(first), outcome(other)] == ["miss", "miss"]
    assert len(stub.exchanges_for(key)) == 2


def test_two_clients_share_answers_under_global_scope(
    keyed: dict[str, RunningService], stub: UpstreamStub
) -> None:
    service, key = keyed["global"], marker()
    stub.reply(key, Reply(pieces=PIECES))

    first = ask(service.url, key, headers=_as(KEY_A))
    other = kept(service.url, key, PIECES, headers=_as(KEY_B))

    assert outcome(first) == "miss"
    assert pieces(other) == pieces(first)
    assert len(stub.exchanges_for(key)) == 1


# 9


def test_the_memory_bound_keeps_the_most_recently_used_answers(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    # About 1,000 bytes a recording, 2,600 bytes allowed: two fit, a third does not.
    size = [f"{'x' * 60}{n} " for n in range(12)]
    questions = [marker() for _ in range(8)]
    for question in questions:
        stub.reply(question, Reply(pieces=size))
    settings = cache_settings(stub, QA_ANSWER_CACHE_MAX_MB=str(2600 / 1024 / 1024))

    with run_service(settings, tmp_path) as service:

        def said(question: str) -> str:
            answer = ask(service.url, question)
            assert_whole(answer, size)
            return outcome(answer)

        def settle(question: str) -> None:
            kept(service.url, question, size)  # kept now (and used most recently)

        first, second, third, *rest = questions
        assert said(first) == "miss"
        settle(first)
        assert said(second) == "miss"
        settle(second)
        settle(first)  # now the second is the least recently used
        assert said(third) == "miss"
        settle(third)  # the second had to go
        assert said(first) == "hit"
        assert said(second) == "miss"
        for question in rest:  # many more than fit
            assert said(question) == "miss"
        settle(rest[-1])
        assert said(rest[-2]) == "hit"
        assert said(first) == "miss"
        assert len(stub.exchanges_for(first)) == 2


# 12


def test_a_hit_costs_no_tokens_of_the_budget_but_counts_against_the_rate(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    key, other = marker(), marker()
    stub.reply(key, Reply(pieces=PIECES, usage={**USAGE, "completion_tokens": 60}))
    stub.reply(other, Reply(pieces=PIECES, usage={**USAGE, "completion_tokens": 10}))
    limits = {"QA_CLIENT_TOKEN_BUDGET": "100/day", "QA_RATE_LIMIT": "40/minute"}

    with run_service(cache_settings(stub, **limits), tmp_path) as service:

        def probe_until(tokens_left: Callable[[str], bool]) -> None:
            """Ask questions that cost nothing until the tokens left say so: an
            answer is charged a moment after its last event."""

            def charged() -> bool:
                probe = marker()
                stub.reply(probe, Reply(usage=FREE))
                answer = httpx.get(f"{service.url}/ai_write", params={"query": probe}, timeout=10)
                return tokens_left(answer.headers["x-ratelimit-remaining-tokens"])

            wait_until(charged, 10, "the charge")

        paid = ask(service.url, key)
        probe_until(lambda left: left == "40")
        hits = [ask(service.url, key) for _ in range(2)]
        # A miss after the hits: once its charge is in, theirs would be in too.
        last = ask(service.url, other)
        probe_until(lambda left: left != "40")
        left = ask(service.url, key).headers["x-ratelimit-remaining-tokens"]
        # Hits until the rate refuses one: a hit is a request like any other.
        for _ in range(41):
            refused = httpx.get(f"{service.url}/ai_write", params={"query": key}, timeout=10)
            if refused.status_code != 200:
                break
            assert refused.headers["x-qa-cache"] == "hit"

    assert [outcome(paid), outcome(last)] == ["miss", "miss"]
    assert [outcome(h) for h in hits] == ["hit", "hit"]
    assert left == "30"  # 100 - 60 - 10: the hits cost nothing
    spent = [int(a.headers["x-ratelimit-remaining-requests"]) for a in (*hits, last)]
    assert spent == [spent[0], spent[0] - 1, spent[0] - 2]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert len(stub.exchanges_for(key)) == 1
