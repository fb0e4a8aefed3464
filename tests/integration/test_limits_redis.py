"""Per-client limits across replicas: two service processes sharing a real redis-server.

Clients are told apart by X-Forwarded-For, which the services trust from
127.0.0.1 (QA_FORWARDED_ALLOW_IPS' default): each test is its own client.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import wait_until
from tests.support.metrics import read_metrics, total
from tests.support.nginx import run_nginx
from tests.support.providers import CANCEL_ON_HANGUP, marker, provider_settings
from tests.support.redis_server import RedisServer, run_redis
from tests.support.service import RunningService, run_service, run_services
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = pytest.mark.replicas

LIMITS = {
    "QA_RATE_LIMIT": "20/minute",
    "QA_CLIENT_MAX_STREAMS": "2",
    "QA_CLIENT_TOKEN_BUDGET": "100/day",
}
FREE = {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with run_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@contextmanager
def two_replicas(
    stub: UpstreamStub, redis: RedisServer, workdir: Path, limits: dict[str, str]
) -> Iterator[list[RunningService]]:
    settings = {
        **provider_settings("openai", stub),
        **CANCEL_ON_HANGUP,
        **limits,
        "QA_REDIS_URL": redis.url,
    }
    with run_services([settings, settings], workdir) as pair:
        yield pair


@pytest.fixture(scope="module")
def replicas(
    stub: UpstreamStub, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[RunningService]]:
    with two_replicas(stub, redis_server, tmp_path_factory.mktemp("limited"), LIMITS) as pair:
        yield pair


def ask(service: RunningService, client: str, query: str | None = None) -> httpx.Response:
    return httpx.get(
        f"{service.url}/ai_write",
        params={"query": query or marker()},
        headers={"X-Forwarded-For": client},
        timeout=10,
    )


def slots_in_redis(redis: RedisServer, client: str) -> int:
    with redis.client() as connection:
        return int(connection.zcard(f"qa:slots:{{ip:{client}}}"))


def wait_for_slots(redis: RedisServer, client: str, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (held := slots_in_redis(redis, client)) != count:
        assert time.monotonic() < deadline, f"{held} slots held, expected {count}"
        time.sleep(0.05)


@contextmanager
def held_stream(service: RunningService, client: str, query: str) -> Iterator[httpx.Response]:
    with httpx.stream(
        "GET",
        f"{service.url}/ai_write",
        params={"query": query},
        headers={"X-Forwarded-For": client},
        timeout=10,
    ) as response:
        yield response


def test_a_client_over_the_rate_gets_429_from_either_replica(
    replicas: list[RunningService], stub: UpstreamStub
) -> None:
    client = "10.0.1.1"
    answered = [ask(replicas[i % 2], client) for i in range(20)]
    refused = [ask(replica, client) for replica in replicas]
    other_client = ask(replicas[0], "10.0.1.2")

    assert [r.status_code for r in answered] == [200] * 20
    remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in answered]
    assert remaining == list(range(19, -1, -1))  # one count, whichever replica answered
    assert [r.status_code for r in refused] == [429, 429]
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limited"}
    assert other_client.status_code == 200


def test_client_max_streams_holds_across_both_replicas(
    replicas: list[RunningService], stub: UpstreamStub, redis_server: RedisServer
) -> None:
    client = "10.0.2.1"
    stalled = [marker(), marker()]
    for key in stalled:
        stub.reply(key, Reply(pieces=["a", "b"], stall_after_pieces=1))
    with ExitStack() as streams:
        for replica, key in zip(replicas, stalled, strict=True):
            assert streams.enter_context(held_stream(replica, client, key)).status_code == 200
        refused = [ask(replica, client) for replica in replicas]
        assert slots_in_redis(redis_server, client) == 2
    # Both hung up: their slots come back (no waiting out a lease).
    wait_for_slots(redis_server, client, 0)
    after = ask(replicas[1], client)

    assert [r.status_code for r in refused] == [429, 429]
    assert {r.json()["error"]["code"] for r in refused} == {"too_many_streams"}
    assert after.status_code == 200


def test_the_budget_charged_on_one_replica_refuses_on_the_other(
    replicas: list[RunningService], stub: UpstreamStub
) -> None:
    client = "10.0.3.1"
    costly = {"prompt_tokens": 5, "completion_tokens": 120, "total_tokens": 125}
    spender = marker()
    stub.reply(spender, Reply(usage=costly))
    spent = ask(replicas[0], client, spender)
    deadline = time.monotonic() + 5
    while True:
        # Free answers until the charge lands (when the answer's task ends).
        free = marker()
        stub.reply(free, Reply(usage=FREE))
        probe = ask(replicas[1], client, free)
        if probe.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    assert spent.status_code == 200
    assert probe.status_code == 429
    assert probe.json()["error"]["code"] == "budget_exhausted"
    assert probe.headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_shutdown_gives_its_clients_slots_back_at_once(
    stub: UpstreamStub, redis_server: RedisServer, tmp_path: Path
) -> None:
    client = "10.0.4.1"
    key = marker()
    stub.reply(key, Reply(pieces=["a", "b"], stall_after_pieces=1))
    settings = {
        **provider_settings("openai", stub),
        **LIMITS,
        "QA_REDIS_URL": redis_server.url,
        "QA_SHUTDOWN_GRACE_SECONDS": "0",
    }
    with run_service(settings, tmp_path) as service, held_stream(service, client, key):
        stub.wait_for_request(key)
        assert slots_in_redis(redis_server, client) == 1
        service.process.terminate()
        service.process.wait(15)

    # Given back by the stopping replica, not left for the 30 s lease.
    assert slots_in_redis(redis_server, client) == 0


async def _one_stream(
    client: httpx.AsyncClient, replica: RunningService, query: str, how: str, after: int
) -> int:
    """Read a stream, ending it `how` after `after` events; the response's status."""
    async with client.stream(
        "GET", f"{replica.url}/ai_write", params={"query": query}, timeout=20
    ) as response:
        if response.status_code != 200:
            return response.status_code
        seen = 0
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                seen += 1
                answer_id = line.removeprefix("id: ").split(":")[0]
                if how != "read" and seen > after:
                    if how == "cancel":
                        cancelled = await client.post(f"{replica.url}/answers/{answer_id}/cancel")
                        assert cancelled.status_code == 200
                    break
        return 200


async def _random_streams(
    replicas: list[RunningService], stub: UpstreamStub, count: int
) -> list[int]:
    rng = random.Random(8)
    gate = asyncio.Semaphore(30)
    async with httpx.AsyncClient(headers={"X-Forwarded-For": "10.0.5.1"}) as client:

        async def one() -> int:
            key = marker()
            stub.reply(key, Reply(pieces=[f"p{i} " for i in range(8)], piece_delay=0.02))
            how = rng.choice(["read", "hangup", "hangup", "cancel"])
            async with gate:
                return await _one_stream(client, rng.choice(replicas), key, how, rng.randint(0, 6))

        async with asyncio.timeout(240):
            return await asyncio.gather(*(one() for _ in range(count)))


def test_after_500_streams_ended_at_random_points_no_slot_stays_held(
    stub: UpstreamStub, redis_server: RedisServer, tmp_path: Path
) -> None:
    limits = {"QA_CLIENT_MAX_STREAMS": "40"}
    stub.record = True
    with two_replicas(stub, redis_server, tmp_path, limits) as pair:
        statuses = asyncio.run(_random_streams(pair, stub, 500))
        wait_for_slots(redis_server, "10.0.5.1", 0, timeout=10)
        held_per_replica = [total(read_metrics(r.url), "qa_client_slots_held") for r in pair]
        # And the whole allowance is there to take again.
        with ExitStack() as streams:
            for i in range(40):
                key = marker()
                stub.reply(key, Reply(pieces=["a", "b"], stall_after_pieces=1))
                taken = streams.enter_context(held_stream(pair[i % 2], "10.0.5.1", key))
                assert taken.status_code == 200
            one_more = ask(pair[0], "10.0.5.1")

    # 30 at a time against 40 places: a hung-up answer keeps its place until
    # it ends (the resume grace), so on a slow machine a few may be refused,
    # rightly. What must never happen is a place that outlives its answer.
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert statuses.count(200) >= 450, statuses.count(429)
    assert held_per_replica == [0, 0]
    assert one_more.status_code == 429


def test_behind_nginx_a_client_cannot_dodge_its_limit_with_its_own_x_forwarded_for(
    replicas: list[RunningService], tmp_path: Path
) -> None:
    backends = [service.url.removeprefix("http://") for service in replicas]
    with run_nginx(backends, tmp_path) as nginx:
        queries = [marker() for _ in range(21)]
        spoofed = [
            httpx.get(
                f"{nginx.url}/ai_write",
                params={"query": query},
                headers={"X-Forwarded-For": f"10.9.9.{i}"},
                timeout=10,
            )
            for i, query in enumerate(queries)
        ]

        # nginx writes a request's access-log line after its response has gone
        # out: the client can hold the last response before the line is there.
        def every_line() -> str | None:
            log = nginx.access_log()
            return log if log.count("\n") >= len(queries) else None

        access_log = wait_until(
            every_line, 10, f"{len(queries)} lines in nginx's access log", describe=nginx.access_log
        )

    # nginx names the peer (127.0.0.1): one client, whatever it claims.
    assert [r.status_code for r in spoofed] == [200] * 20 + [429]
    assert spoofed[-1].json()["error"]["code"] == "rate_limited"
    # The shipped log format writes the path, never the query (a ticket could be in it).
    assert access_log.count("GET /ai_write HTTP/1.1") == 21
    assert not any(query in access_log for query in queries)
