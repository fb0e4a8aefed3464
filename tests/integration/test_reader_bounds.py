"""Readers past an instance's bounds are refused before their stream (issue 20, item 2).

Reading an answer needs no key, so on 021b65e anyone could open any number of
readers. Now QA_MAX_READERS_PER_ANSWER bounds the connections reading one
answer on an instance (the one that started it included), and
QA_CLIENT_MAX_READERS one client's resumes: one more gets 429
too_many_readers, JSON, with Retry-After, and a place that is given back lets
the next one in.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import wait_until
from tests.support.providers import marker, provider_settings
from tests.support.resume import AnswerIdWatch, read
from tests.support.service import run_service
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = pytest.mark.slow


def test_readers_past_the_bounds_get_429_too_many_readers_until_one_leaves(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=[f"piece {n} " for n in range(80)], piece_delay=0.25))
    settings = {
        **provider_settings("openai", stub),
        "QA_MAX_READERS_PER_ANSWER": "2",
        "QA_CLIENT_MAX_READERS": "3",
    }
    with (
        run_service(settings, tmp_path) as service,
        ThreadPoolExecutor(4) as pool,
        httpx.Client(base_url=service.url, timeout=30) as client,
        ExitStack() as streams,
    ):

        def start() -> str:
            """A long answer, read to its end by the connection that started it."""
            started = AnswerIdWatch()
            pool.submit(read, service.url, params={"query": key}, on_event=started, timeout=60)
            return started.wait(timeout=30)

        def resume(answer_id: str) -> httpx.Response:
            """A resume, held open (its headers came: it has its place, or its refusal)."""
            response = client.stream("GET", f"/answers/{answer_id}/events")
            return streams.enter_context(response)

        first = start()
        # The starting connection and one resume: the answer's two readers.
        assert resume(first).status_code == 200
        per_answer = resume(first)
        # This client's resumes: one of `first`, two of other answers.
        second, third, fourth = start(), start(), start()
        assert resume(second).status_code == 200
        leaving = resume(third)
        assert leaving.status_code == 200
        per_client = resume(fourth)
        for refused in (per_answer, per_client):
            refused.read()
        # A reader leaves: its place is given back, and the next resume is let in.
        leaving.close()
        wait_until(lambda: resume(fourth).status_code == 200, 30, "a resume after one left")

    for refused in (per_answer, per_client):
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith("application/json")
        assert refused.json()["error"]["code"] == "too_many_readers"
        assert refused.json()["error"]["retryable"] is True
        assert refused.headers["retry-after"] == "1"
