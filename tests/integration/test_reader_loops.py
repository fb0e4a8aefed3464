"""Readers that hang up at random moments leave no presence loop running
(issue 20, item 1, the readers' half; Python 3.11).

While a reader is attached, a loop refreshes the answer's readers key in
Redis, so that the producer's resume grace counts from when the last reader
left. On ce7baec that loop was stopped by one cancel(); redis-py sends each
command through asyncio.wait_for, which on 3.11 can swallow it (CPython
gh-86296): the review saw 8-19 of 400 hang-ups leave a loop touching the key
for ever, and the answer never ended. Now the loop is stopped cooperatively
(core/loops.py) and awaited, so every readers key lapses once its readers
have gone.
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from qa_service.answers.readers import LocalReaders
from qa_service.stores.redis_answers import RedisAnswerStore
from qa_service.stores.redis_client import open_redis_client
from qa_service.stores.redis_log import RedisLogSettings
from tests.support.daemon import wait_until
from tests.support.providers import marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.resume import AnswerIdWatch, read
from tests.support.service import run_service
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

ANSWERS = 20
HANGUPS_PER_ANSWER = 20  # 400 in all
GRACE_SECONDS = 3


def _hang_up_after(url: str, seconds: float) -> int:
    """Read a resume for about `seconds` (0: right after its headers), then hang up."""
    deadline = time.monotonic() + seconds
    with httpx.stream("GET", url, timeout=30) as response:
        if seconds > 0:
            for _ in response.iter_raw():
                if time.monotonic() >= deadline:
                    break
        return response.status_code


def _readers_one_after_another(base_url: str, answer_id: str, seed: int) -> list[int]:
    """Each the only reader of its answer while it reads: each hang-up stops a loop."""
    moments = random.Random(seed)
    url = f"{base_url}/answers/{answer_id}/events"
    return [_hang_up_after(url, moments.uniform(0, 0.6)) for _ in range(HANGUPS_PER_ANSWER)]


def test_hundreds_of_reader_hangups_at_random_moments_leave_no_presence_behind(
    stub: UpstreamStub, tmp_path: Path
) -> None:
    key = marker()
    # Far longer than the hang-ups take: only the grace period ends these answers.
    stub.reply(key, Reply(pieces=[f"piece {n} " for n in range(3000)], piece_delay=0.05))
    with run_redis(tmp_path) as redis:
        settings = {
            **provider_settings("openai", stub),
            "QA_REDIS_URL": redis.url,
            "QA_RESUME_GRACE_SECONDS": str(GRACE_SECONDS),
        }
        with (
            run_service(settings, tmp_path) as service,
            ThreadPoolExecutor(ANSWERS) as pool,
            redis.client() as probe,
        ):
            answer_ids = []
            for _ in range(ANSWERS):
                started = AnswerIdWatch()
                # Its first reader hangs up after its first text; the answer goes on.
                pool.submit(read, service.url, params={"query": key}, on_event=started, texts=1)
                answer_ids.append(started.wait(timeout=30))
            hangups = list(
                pool.map(
                    lambda n: _readers_one_after_another(service.url, answer_ids[n], n),
                    range(ANSWERS),
                )
            )

            def present() -> list[str]:
                return [a for a in answer_ids if probe.exists(f"qa:answer:{{{a}}}:readers")]

            def still_touching() -> str:
                # Each loop SETs its key every 0.75 s (a quarter of the grace).
                before = redis.command_stats()
                time.sleep(3)
                sets = (redis.command_stats() - before).calls.get("set", 0)
                return f"{len(present())} of {ANSWERS} answers still have a reader: " + (
                    f"about {sets / 4:.0f} loops of {ANSWERS * HANGUPS_PER_ANSWER} hang-ups"
                )

            # Every reader has gone: each readers key lapses within the grace
            # period, unless a loop still touches it. The deadline is generous.
            wait_until(
                lambda: not present(),
                GRACE_SECONDS + 30,
                "every readers key gone",
                describe=still_touching,
            )

    statuses = {status for statuses in hangups for status in statuses}
    assert statuses == {200}


async def test_hundreds_of_readers_cancelled_at_random_moments_leave_no_loop_task(
    tmp_path: Path,
) -> None:
    """The same in one process, counting tasks: 300 readers, each the only one of
    its answer, cancelled while their loops wait on Redis or between commands."""
    rounds, answers = 15, 20
    moments = random.Random(20)
    loop_names = {"reader-presence", "follow-answer"}
    with run_redis(tmp_path) as redis:
        async with (
            open_redis_client(redis.url, 64) as client,
            open_redis_client(redis.url, 64, wait_for_connection=True) as reads,
        ):
            store = RedisAnswerStore(client, RedisLogSettings(60, 1000), reads)
            readers = LocalReaders(store, presence_seconds=1.0)
            answer_ids = [f"loops{n}" for n in range(answers)]
            # Made by another replica's store: this one does not hold
            # them, so their feeds read Redis, and are cancelled in its XREAD.
            elsewhere = RedisAnswerStore(client, RedisLogSettings(60, 1000))
            for answer_id in answer_ids:
                await elsewhere.create(answer_id, "fingerprint")

            async def reader(answer_id: str) -> None:
                place = readers.admit(answer_id, "a client")
                try:
                    while True:  # a log that never grows: the feed's XREAD BLOCK, again and again
                        await store.read(answer_id, -1, 0.2)
                finally:
                    await place.leave()

            for _ in range(rounds):
                tasks = [asyncio.create_task(reader(a)) for a in answer_ids]
                await asyncio.sleep(moments.uniform(0, 0.3))
                for task in tasks:
                    await asyncio.sleep(moments.uniform(0, 0.02))
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            running = [t.get_name() for t in asyncio.all_tasks() if t.get_name() in loop_names]
            assert readers.answers == 0
            assert running == []
