"""The service on each Redis that operators run (QA_REDIS_URL): TLS, Sentinel, a cluster.

One pair of service processes per topology shares it. On each: an answer
resumes by id on the other process; limits and client slots count across both;
a stream ticket issued by one is spent on the other; an AI SDK chat resumes on
the other; a cancel sent to one stops the answer on the other (pub/sub). The
one-server case is every other replica test's. The answer and slot checks
also look in Redis (on the cluster: in the node that owns the key's slot) for
the key the service wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from qa_service.access.keys import client_id, key_digest
from tests.integration.test_ai_sdk_chat import bearer, chat_body, hang_up_at, read_chat
from tests.support.providers import marker, provider_settings
from tests.support.redis_topologies import RedisTopology
from tests.support.resume import AnswerIdWatch, read, seqs
from tests.support.service import RunningService, run_services
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = pytest.mark.replicas

KEY = "qa-topo-main-Vb3nQ8sX2kLm7pRt"  # answers, tickets, chats
KEY_LIMITED = "qa-topo-rate-Hj5wE1cZ9yUo4iNa"  # the rate limit's own client
KEY_SLOTS = "qa-topo-slot-Gf6tD2vB8mKq0sWe"  # client slots' own client
RATE = 6  # answers a minute, per key
PIECES = [f"p{n} " for n in range(30)]


@dataclass
class Deployment:
    name: str
    redis: RedisTopology
    a: RunningService
    b: RunningService


@pytest.fixture(scope="module", params=["tls_redis", "sentinel_set", "redis_cluster"])
def deployment(
    request: pytest.FixtureRequest, stub: UpstreamStub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    redis: RedisTopology = request.getfixturevalue(request.param)
    settings = {
        **provider_settings("openai", stub),
        "QA_REDIS_URL": redis.url,
        "QA_API_KEYS": f"{KEY},{KEY_LIMITED},{KEY_SLOTS}",
        "QA_RATE_LIMIT": f"{RATE}/minute",
        "QA_CLIENT_MAX_STREAMS": "2",
        "QA_RESUME_GRACE_SECONDS": "3",
    }
    workdir = tmp_path_factory.mktemp(f"on-{request.param}")
    with run_services([settings, settings], workdir) as (a, b):
        yield Deployment(request.param, redis, a, b)


def _slow(stub: UpstreamStub) -> str:
    question = marker()
    stub.reply(question, Reply(pieces=PIECES, piece_delay=0.03))
    return question


def _exists(deployment: Deployment, key: str) -> bool:
    with deployment.redis.client_for(key) as client:
        return bool(client.exists(key))


def test_an_answer_resumes_by_id_on_the_other_process(
    deployment: Deployment, stub: UpstreamStub
) -> None:
    question = _slow(stub)
    first = read(
        deployment.a.url, params={"query": question}, headers=bearer(KEY), texts=3, timeout=20
    )
    assert first.status == 200, first.body
    rest = read(
        deployment.b.url,
        f"/answers/{first.answer_id}/events",
        last_event_id=first.last_id,
        timeout=20,
    )

    assert rest.status == 200
    assert first.text + rest.text == "".join(PIECES)
    assert seqs(first.ids + rest.ids) == list(range(len(first.ids) + len(rest.ids)))
    assert rest.last.get("done") is not None, rest.last
    assert _exists(deployment, f"qa:answer:{{{first.answer_id}}}:events")
    assert len(stub.exchanges_for(question)) == 1


def test_the_rate_limit_counts_on_both_processes(deployment: Deployment) -> None:
    headers = bearer(KEY_LIMITED)
    answered = [
        httpx.get(f"{p.url}/ai_write", params={"query": marker()}, headers=headers, timeout=20)
        for p in [deployment.a, deployment.b] * (RATE // 2)
    ]
    refused = [
        httpx.get(f"{p.url}/ai_write", params={"query": marker()}, headers=headers, timeout=20)
        for p in (deployment.a, deployment.b)
    ]

    assert [r.status_code for r in answered] == [200] * RATE
    remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in answered]
    assert remaining == list(range(RATE - 1, -1, -1))  # one count, whichever answered
    assert [r.status_code for r in refused] == [429, 429]
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limited"}


def test_client_slots_hold_across_both_processes(
    deployment: Deployment, stub: UpstreamStub
) -> None:
    headers = bearer(KEY_SLOTS)
    stalled = [marker(), marker()]
    for question in stalled:
        stub.reply(question, Reply(pieces=["a", "b"], stall_after_pieces=1))
    slots_key = f"qa:slots:{{{client_id(key_digest(KEY_SLOTS))}}}"
    with ExitStack() as streams:
        for service, question in zip((deployment.a, deployment.b), stalled, strict=True):
            response = streams.enter_context(
                httpx.stream(
                    "GET",
                    f"{service.url}/ai_write",
                    params={"query": question},
                    headers=headers,
                    timeout=20,
                )
            )
            assert response.status_code == 200
        refused = httpx.get(
            f"{deployment.a.url}/ai_write", params={"query": marker()}, headers=headers, timeout=20
        )
        with deployment.redis.client_for(slots_key) as client:
            held = client.zcard(slots_key)

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_streams"
    assert held == 2


def test_a_ticket_issued_by_one_process_is_spent_on_the_other(
    deployment: Deployment, stub: UpstreamStub
) -> None:
    question = marker()
    stub.reply(question, Reply(pieces=["Tickets ", "travel."]))
    issued = httpx.post(
        f"{deployment.a.url}/stream-tickets", json={"query": question}, headers=bearer(KEY)
    )
    assert issued.status_code == 200, issued.text
    params = {"query": question, "ticket": issued.json()["ticket"]}

    spent = read(deployment.b.url, params=params)
    again = httpx.get(f"{deployment.a.url}/ai_write", params=params, timeout=20)

    assert spent.status == 200
    assert spent.text == "Tickets travel."
    assert again.status_code == 401
    assert len(stub.exchanges_for(question)) == 1


def test_a_chat_resumes_on_the_other_process(deployment: Deployment, stub: UpstreamStub) -> None:
    question = _slow(stub)
    chat_id = f"chat-{marker()}"
    browser = httpx.Cookies()

    hang_up_at(deployment.a.url, chat_body(question, chat_id), "text-delta", bearer(KEY), browser)
    resumed = read_chat(deployment.b.url, chat_id=chat_id, headers=bearer(KEY), browser=browser)

    assert resumed.status == 200
    assert resumed.text == "".join(PIECES)
    assert resumed.chunks[-1] == {"type": "finish", "finishReason": "stop"}
    assert len(stub.exchanges_for(question)) == 1


def test_a_cancel_through_one_process_stops_the_answer_on_the_other(
    deployment: Deployment, stub: UpstreamStub
) -> None:
    question = marker()
    stub.reply(question, Reply(pieces=PIECES * 20, piece_delay=0.02))
    watch = AnswerIdWatch()
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(
            read, deployment.a.url, params={"query": question}, headers=bearer(KEY), on_event=watch
        )
        exchange = stub.wait_for_request(question)
        answer_id = watch.wait()
        cancelled = httpx.post(
            f"{deployment.b.url}/answers/{answer_id}/cancel", headers=bearer(KEY), timeout=10
        )
        stub.wait_closed(question)
        whole = reading.result(timeout=20)

    assert cancelled.status_code == 200
    assert cancelled.json() == {"answer_id": answer_id, "status": "cancelled"}
    assert not exchange.completed
    assert whole.last["error"]["code"] == "cancelled"
