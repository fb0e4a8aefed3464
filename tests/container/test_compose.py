"""docker-compose.yml, whole, under podman-compose: redis, two replicas, nginx in front.

Answers come from the keyless demo provider (deterministic text, paced like a
model), so nothing inside the containers needs the host's provider stub.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.compose import Stack, run_stack
from tests.support.sse import read_stream

QUERY = "photosynthesis"
# A few seconds an answer (about 110 pieces): still being written when it is cut.
DEMO = {"QA_PROVIDER": "demo", "QA_DEMO_CHUNK_DELAY_MS": "30"}


@pytest.fixture(scope="module")
def stack(image_build_seconds: float, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack(tmp_path_factory.mktemp("compose"), DEMO) as running:
        yield running


@dataclass
class Part:
    """One connection's share of an answer: its events and their SSE ids."""

    status: int
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def read_part(
    url: str, texts: int | None, last_event_id: str | None = None, timeout: float = 30
) -> Part:
    """Read /ai_write?query=QUERY through nginx; hang up after `texts` text events."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    deadline = time.monotonic() + timeout
    with httpx.stream(
        "GET", f"{url}/ai_write", params={"query": QUERY}, headers=headers, timeout=timeout
    ) as response:
        part = Part(response.status_code)
        if response.status_code != 200:
            return part
        event_id = ""
        for line in response.iter_lines():
            assert time.monotonic() < deadline, "the stream is still open at its deadline"
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                part.events.append(json.loads(line[5:]))
                part.ids.append(event_id)
                if texts is not None and sum("text" in e for e in part.events) == texts:
                    break  # leaving the block closes the connection
    return part


def served_by(stack: Stack, request_id: str, timeout: float = 10) -> list[str]:
    """The replicas whose logs name `request_id` (each answer logs one line when it ends)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [name for name in stack.containers("qa-service") if request_id in stack.logs(name)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_compose_runs_redis_two_replicas_and_nginx(stack: Stack) -> None:
    assert len(stack.containers("redis")) == 1
    assert len(stack.containers("qa-service")) == 2
    assert len(stack.containers("nginx")) == 1
    health = httpx.get(f"{stack.url}/healthz", timeout=5)
    assert health.status_code == 200
    ready = httpx.get(f"{stack.url}/readyz", timeout=5)
    assert ready.status_code == 200


def test_an_answer_streams_whole_through_nginx(stack: Stack) -> None:
    stream = read_stream(stack.url, params={"query": QUERY})
    assert stream.status == 200
    assert stream.kinds[0] == "meta"
    assert stream.kinds[-1] == "done"
    assert stream.events[0]["meta"]["provider"] == "demo"
    assert len(stream.text) > 200


def test_nginx_sends_requests_to_both_replicas(stack: Stack) -> None:
    # deploy/nginx.conf keeps one round robin for all workers (`zone`), so
    # consecutive requests alternate between the two.
    replicas: set[str] = set()
    for _ in range(3):
        request_id = uuid.uuid4().hex
        stream = read_stream(
            stack.url, params={"query": "round robin"}, headers={"X-Request-ID": request_id}
        )
        assert stream.kinds[-1] == "done"
        assert stream.headers["x-request-id"] == request_id
        replicas.update(served_by(stack, request_id))
    assert replicas == set(stack.containers("qa-service"))


def test_an_answer_cut_twice_resumes_exactly_through_nginx(stack: Stack) -> None:
    full = read_part(stack.url, texts=None)
    assert full.events[-1].keys() == {"done"}
    assert "answer_id" in full.events[0]["meta"]

    # Three connections, round robin over two replicas: the answer is written on
    # one and read on both. Cut after 5 texts, twice, each time on a new connection.
    parts = [read_part(stack.url, texts=5)]
    parts.append(read_part(stack.url, texts=5, last_event_id=parts[-1].ids[-1]))
    parts.append(read_part(stack.url, texts=None, last_event_id=parts[-1].ids[-1]))

    assert [part.status for part in parts] == [200, 200, 200]
    events = [event for part in parts for event in part.events]
    ids = [event_id for part in parts for event_id in part.ids]
    answer_id = parts[0].events[0]["meta"]["answer_id"]
    assert len(ids) == len(set(ids)), "an event was sent twice"
    assert ids == [f"{answer_id}:{seq}" for seq in range(len(ids))]
    assert [next(iter(e)) for e in events].count("meta") == 1
    assert events[-1].keys() == {"done"}
    text = "".join(e["text"] for e in events if "text" in e)
    assert text == "".join(e["text"] for e in full.events if "text" in e)

    # The answer has ended and its last event was delivered: nothing more to send.
    finished = read_part(stack.url, texts=None, last_event_id=ids[-1])
    assert finished.status == 204
