"""Past what the process can serve: clean, fast refusals instead of starved newcomers.

- The adaptive limit (QA_ADAPTIVE_LIMIT): a loop that falls behind refuses
  newcomers with 503 over_capacity and Retry-After, and admits again once it
  keeps up. The loop is made to fall behind deterministically, not by load:
  the service is stopped (SIGSTOP) for two seconds, so its lag timer fires
  two seconds late however fast or busy the machine is, and a request sent
  meanwhile is the first one it reads when it goes on (SIGCONT). The timer
  is due before the request's bytes are even parsed, and the smoothed lag
  then takes several samples to fall back under the target.
- The open-file limit: with RLIMIT_NOFILE low, the answers past what the
  descriptors allow are clean 503s, said once in the log, where they were
  connection resets and empty replies.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from qa_service.access.descriptors import streams_within
from qa_service.config import Settings
from tests.support.daemon import wait_until
from tests.support.metrics import read_metrics, total
from tests.support.providers import CANCEL_ON_HANGUP, marker, provider_settings
from tests.support.service import open_stream, run_service
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = pytest.mark.slow

# Answers held open while the loop is stopped: the cut keeps half of them,
# so a newcomer is refused until the limit has probed back up past them.
HELD = 10
STOPPED_SECONDS = 2.0


def stalling(stub: UpstreamStub) -> str:
    """A query whose answer sends its first piece, then nothing until the client leaves."""
    key = marker()
    stub.reply(key, Reply(pieces=["a", "b"], stall_after_pieces=1))
    return key


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_loop_that_falls_behind_refuses_newcomers_fast_and_admits_again_once_it_keeps_up(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    settings = {
        **provider_settings("openai", stub),
        **CANCEL_ON_HANGUP,
        "QA_ADAPTIVE_LIMIT": "true",
        # Well above what a busy machine's scheduling adds to a quiet loop.
        "QA_ADAPTIVE_LIMIT_LAG_MS": "200",
        "QA_ADAPTIVE_LIMIT_MIN": "1",
    }
    with run_service(settings, tmp_path) as service, ExitStack() as held:
        for _ in range(HELD):
            assert held.enter_context(open_stream(service, stalling(stub))).status_code == 200
        refused_query = marker()
        answers: list[httpx.Response] = []
        asking = threading.Thread(
            target=lambda: answers.append(
                httpx.get(f"{service.url}/ai_write", params={"query": refused_query}, timeout=30)
            )
        )
        with stopped(service.process.pid):
            asking.start()
            time.sleep(STOPPED_SECONDS)
        asking.join(30)

        # Recovered: the loop keeps up again, and a newcomer is admitted
        # while the held answers still run.
        def admitted() -> httpx.Response | None:
            key = marker()
            stub.reply(key, Reply(pieces=["ok"]))
            answer = httpx.get(f"{service.url}/ai_write", params={"query": key}, timeout=10)
            return answer if answer.status_code == 200 else None

        recovered = wait_until(admitted, 15, "an answer admitted once the loop kept up")

    (refused,) = answers
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "over_capacity"
    assert refused.headers["retry-after"] == "1"
    assert stub.exchanges_for(refused_query) == []
    assert recovered.status_code == 200


async def test_past_what_the_open_file_limit_allows_answers_are_clean_503s_said_once_in_the_log(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    open_files = 200
    idle = Settings.model_fields["upstream_max_idle_connections"].default
    allowed = streams_within(open_files, redis=False, idle_connections=idle)
    assert allowed is not None
    # Twice what the descriptors hold without the cap: before it, these ended
    # as resets and empty replies (accept and connect failing with EMFILE).
    asked = 4 * allowed
    settings = {**provider_settings("openai", stub), **CANCEL_ON_HANGUP}
    with run_service(settings, tmp_path, open_files=(open_files, open_files)) as service:
        release, all_refused = asyncio.Event(), asyncio.Event()
        ended = 0
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=service.url, timeout=30, limits=limits) as client:

            async def ask() -> tuple[int, str, str | None]:
                nonlocal ended
                query = stalling(stub)
                try:
                    async with client.stream("GET", "/ai_write", params={"query": query}) as answer:
                        if answer.status_code == 200:
                            await release.wait()  # held open until every request has its answer
                            return 200, "", None
                        body = (await answer.aread()).decode()
                        return answer.status_code, body, answer.headers.get("retry-after")
                finally:
                    ended += 1
                    if ended >= asked - allowed:
                        all_refused.set()

            tasks = [asyncio.create_task(ask()) for _ in range(asked)]
            async with asyncio.timeout(60):
                # Every refusal is in while the answers admitted are still held.
                await all_refused.wait()
                release.set()
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        said = wait_until(
            lambda: [r for r in service.log_records() if "open file limit reached" in r["message"]],
            10,
            "the log line saying the open-file limit refuses",
        )
        await asyncio.sleep(0.5)  # a second line would be written by now
        said_again = [r for r in service.log_records() if "open file limit reached" in r["message"]]
        refused_by = read_metrics(service.url)

    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == [], failures[:3]
    statuses = sorted(o[0] for o in outcomes if not isinstance(o, BaseException))
    assert statuses == [200] * allowed + [503] * (asked - allowed)
    for status, body, retry_after in (o for o in outcomes if not isinstance(o, BaseException)):
        if status == 503:
            assert '"over_capacity"' in body
            assert retry_after == "1"
    assert len(said) == len(said_again) == 1
    assert said[0]["level"] == "WARNING"
    assert said[0]["streams_allowed"] == allowed
    refusals = "qa_over_capacity_refusals_total"
    assert total(refused_by, refusals, bound="open_files") == asked - allowed
    assert total(refused_by, refusals) == asked - allowed
