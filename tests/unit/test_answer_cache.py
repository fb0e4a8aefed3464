"""The answer cache in one process: keys, the in-process store's bound, and hit,
join, miss and bypass with the demo model and the in-process answer store."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import openai
import pytest
from starlette.requests import Request

from qa_service.answers.cache.answer_cache import AnswerCache, CacheControls, CachePolicy
from qa_service.answers.cache.keys import GLOBAL_SCOPE, ModelShape, cache_key
from qa_service.answers.cache.recording import RecordedAnswer
from qa_service.answers.connection import answer_events
from qa_service.answers.model import AnswerRequest
from qa_service.answers.registry import AnswerRegistry
from qa_service.answers.run import AnswerRun, RunTiming
from qa_service.api.opening import cache_controls
from qa_service.core.errors import STORE_UNAVAILABLE, UPSTREAM_ERROR, StoreUnavailableError
from qa_service.core.events import (
    AnswerEvent,
    AnswerMeta,
    AnswerSummary,
    Done,
    Failed,
    Meta,
    Text,
)
from qa_service.generation.demo import SCENARIO_CONFIG_KEY, build_demo_model
from qa_service.generation.history import Turn
from qa_service.generation.prompts import load_prompts
from qa_service.generation.providers import with_fallback
from qa_service.generation.report import GenerationReport
from qa_service.generation.writer import AIWriter, GenerationLimits
from qa_service.stores.memory_answers import MemoryAnswerStore
from qa_service.stores.memory_cache import MemoryCacheStore
from tests.unit.test_fallback import ScriptedModel, _fallback, _status_error

PROMPTS = load_prompts(Path(__file__).resolve().parents[2] / "prompts")
META = AnswerMeta(request_id="rid", provider="demo", model="demo-writer", prompt="explain")
SHAPE = ModelShape("demo", "demo-writer", {"temperature": 0.7, "max_tokens": 512})
# The version the writer streams: it writes exactly the version a request
# names, and refuses one it does not keep (generation/prompt_library.py).
REQUEST = AnswerRequest("photosynthesis", "explain", {}, prompt_version=PROMPTS["explain"].version)


class CountingWriter(AIWriter):
    """The demo model's writer, counting the answers it is asked for."""

    calls = 0

    def stream(self, question: str, **kwargs: Any) -> AsyncGenerator[str]:
        self.calls += 1
        return super().stream(question, **kwargs)


def _cache(
    chunk_delay: float = 0.0,
    grace: float = 0.0,
    max_pieces: int | None = None,
    store: MemoryCacheStore | None = None,
    charges: list[tuple[str, int]] | None = None,
    **policy: Any,
) -> tuple[AnswerCache, AnswerRegistry, CountingWriter]:
    """A cache on the demo model; `charges` collects what it charges to whom."""
    writer = CountingWriter(
        build_demo_model(chunk_delay, 0), PROMPTS, GenerationLimits(max_pieces=max_pieces)
    )
    timing = RunTiming(close_seconds=1.0, lease_seconds=3.0, grace_seconds=grace)
    registry = AnswerRegistry(MemoryAnswerStore(300), writer, timing)
    cache_policy = CachePolicy(ttl_seconds=60, **policy)
    charged = charges if charges is not None else []

    async def charge(client: str, tokens: int) -> None:
        charged.append((client, tokens))

    cache_store = store if store is not None else MemoryCacheStore(1 << 20)
    return (
        AnswerCache(registry, cache_store, cache_policy, SHAPE, charge),
        registry,
        writer,
    )


async def _events(registry: AnswerRegistry, run: AnswerRun) -> list[AnswerEvent]:
    async with asyncio.timeout(20):
        return [event async for event in answer_events(registry, run.id, -1)]


def _texts(events: list[AnswerEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, Text)]


async def _settled(cache: AnswerCache, registry: AnswerRegistry) -> None:
    """The cache's bookkeeping after each answer (keep, leave) has run.

    The answers' tasks first: a reader's stream can end a moment before the
    task that wrote it, whose end starts that bookkeeping.
    """
    async with asyncio.timeout(10):
        while registry.count_generating():  # noqa: ASYNC110 - a count, with no event to wait on
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # the tasks' done callbacks, which start it
        await cache.aclose()


# --- keys


_KEY_CHANGES = [
    (lambda r, s: (dataclasses.replace(r, question="respiration"), s, "c"), "question"),
    (lambda r, s: (dataclasses.replace(r, prompt="eli5"), s, "c"), "prompt"),
    (lambda r, s: (dataclasses.replace(r, prompt_version="v2"), s, "c"), "prompt version"),
    (
        lambda r, s: (dataclasses.replace(r, history=(Turn("user", "hi"),)), s, "c"),
        "history",
    ),
    (
        lambda r, s: (
            dataclasses.replace(r, configurable={SCENARIO_CONFIG_KEY: "unicode"}),
            s,
            "c",
        ),
        "scenario",
    ),
    (lambda r, s: (r, dataclasses.replace(s, model="other"), "c"), "model"),
    (lambda r, s: (r, dataclasses.replace(s, provider="groq"), "c"), "provider"),
    (
        lambda r, s: (
            r,
            dataclasses.replace(s, sampling={"temperature": 0.0, "max_tokens": 512}),
            "c",
        ),
        "temperature",
    ),
    (lambda r, s: (r, s, "another client"), "client"),
    (lambda r, s: (r, s, GLOBAL_SCOPE), "scope"),
]


@pytest.mark.parametrize(("change", "what"), _KEY_CHANGES, ids=[w for _, w in _KEY_CHANGES])
def test_everything_that_shapes_the_answer_is_in_its_key(change: Any, what: str) -> None:
    request, shape, scope = change(REQUEST, SHAPE)
    assert cache_key(request, scope, shape) != cache_key(REQUEST, "c", SHAPE), what


def test_the_key_is_a_digest_that_names_neither_the_question_nor_the_client() -> None:
    key = cache_key(REQUEST, "client-7", SHAPE)
    assert key == cache_key(REQUEST, "client-7", SHAPE)
    assert len(key) == 64
    assert "photosynthesis" not in key
    assert "client" not in key


# --- the in-process store


async def test_the_in_process_store_evicts_the_least_recently_used_past_its_bound() -> None:
    store = MemoryCacheStore(max_bytes=250)
    for name in "abc":
        await store.put(name, name.encode() * 100, 60)  # 100 bytes each
    assert await store.get("a") is None  # the third put pushed the oldest out
    assert store.size_bytes == 200
    await store.get("b")  # used: c is now the least recent
    await store.put("d", b"d" * 100, 60)
    assert await store.get("c") is None
    assert await store.get("b") is not None
    assert await store.get("d") is not None
    assert store.size_bytes <= 250


async def test_a_recording_larger_than_the_whole_bound_is_not_kept() -> None:
    store = MemoryCacheStore(max_bytes=50)
    await store.put("a", b"a" * 40, 60)
    await store.put("big", b"x" * 51, 60)
    assert await store.get("big") is None
    assert await store.get("a") is not None


async def test_a_recording_expires_at_its_deadline() -> None:
    now = [0.0]
    store = MemoryCacheStore(max_bytes=100, clock=lambda: now[0])
    await store.put("a", b"x", 10)
    now[0] = 9.9
    assert await store.get("a") == b"x"
    now[0] = 10.0
    assert await store.get("a") is None
    assert store.size_bytes == 0


async def test_a_flight_counts_its_readers_up_to_its_bound_and_ends_with_the_last() -> None:
    store = MemoryCacheStore(max_bytes=100)
    assert await store.join_or_start("k", "A", 2, 60) == ("A", True)
    assert await store.join_or_start("k", "B", 2, 60) == ("A", False)
    assert await store.join_or_start("k", "C", 2, 60) is None  # full
    assert await store.leave("k", "A") == 1
    assert await store.leave("k", "other") is None
    assert await store.leave("k", "A") == 0
    assert await store.join_or_start("k", "D", 2, 60) == ("D", True)  # a new flight
    await store.end("k", "D")
    assert await store.leave("k", "D") is None


# --- hit, join, miss, bypass


async def test_a_second_ask_replays_the_same_pieces_without_the_model() -> None:
    charges: list[tuple[str, int]] = []
    cache, registry, writer = _cache(charges=charges)
    first = await cache.start(REQUEST, META, "c")
    first_events = await _events(registry, first)
    await _settled(cache, registry)
    second = await cache.start(REQUEST, META, "c")
    second_events = await _events(registry, second)

    assert (first.meta.cache, second.meta.cache) == ("miss", "hit")
    assert writer.calls == 1
    assert _texts(second_events) == _texts(first_events)
    assert len(_texts(first_events)) > 10
    first_done, second_done = first_events[-1], second_events[-1]
    assert isinstance(first_done, Done)
    assert isinstance(second_done, Done)
    assert second_done.summary.usage == first_done.summary.usage is not None
    assert second_done.summary.cache == "hit"
    assert second.id != first.id
    # The provider call is charged once, to its asker; the hit costs nothing.
    assert charges == [("c", first_done.summary.usage["output_tokens"])]
    assert (first.billed_tokens, second.billed_tokens) == (0, 0)


async def test_identical_questions_in_flight_share_one_model_call() -> None:
    charges: list[tuple[str, int]] = []
    cache, registry, writer = _cache(chunk_delay=0.005, charges=charges, global_scope=True)
    runs = [await cache.start(REQUEST, META, client) for client in "abcde"]
    streams = await asyncio.gather(*(_events(registry, run) for run in runs))

    assert [run.meta.cache for run in runs] == ["miss"] + ["join"] * 4
    assert writer.calls == 1
    assert len({run.id for run in runs}) == 5
    assert all(_texts(stream) == _texts(streams[0]) for stream in streams)
    assert all(isinstance(stream[-1], Done) for stream in streams)
    await _settled(cache, registry)
    assert [client for client, _ in charges] == ["a"]  # the asker, once


async def test_the_asker_pays_the_whole_call_even_when_it_leaves_before_its_joiner() -> None:
    """Its answer cancelled once a join of its own had attached, a client must
    not read the rest free: the call is charged whole when it ends."""
    charges: list[tuple[str, int]] = []
    cache, registry, _ = _cache(chunk_delay=0.005, charges=charges)
    asker = await cache.start(REQUEST, META, "c")
    joiner = await cache.start(REQUEST, META, "c")
    await asyncio.sleep(0.02)
    await registry.cancel(asker.id)
    joiner_end = (await _events(registry, joiner))[-1]
    await _settled(cache, registry)

    assert isinstance(joiner_end, Done)
    assert joiner_end.summary.usage is not None
    assert charges == [("c", joiner_end.summary.usage["output_tokens"])]


async def test_a_joiners_cancel_and_the_askers_cancel_detach_only_themselves() -> None:
    cache, registry, writer = _cache(chunk_delay=0.01)
    asker, joiner, stayer = [await cache.start(REQUEST, META, "c") for _ in range(3)]
    stayer_events = asyncio.ensure_future(_events(registry, stayer))
    await asyncio.sleep(0.05)
    await registry.cancel(asker.id)
    await registry.cancel(joiner.id)

    events = await stayer_events
    assert isinstance(events[-1], Done)
    assert isinstance((await _events(registry, asker))[-1], Failed)
    assert isinstance((await _events(registry, joiner))[-1], Failed)
    assert writer.calls == 1


async def test_the_shared_answer_is_cancelled_when_its_last_reader_leaves() -> None:
    cache, registry, _ = _cache(chunk_delay=0.02)
    runs = [await cache.start(REQUEST, META, "c") for _ in range(2)]
    await asyncio.sleep(0.05)
    shared = [run for run in registry._runs.values() if run.meta.cache == "source"]
    assert len(shared) == 1
    for run in runs:
        await registry.cancel(run.id)
    task = shared[0].task
    assert task is not None
    await asyncio.wait({task}, timeout=5)
    assert shared[0].stats.outcome == "client_disconnected"


async def test_a_cancelled_answer_is_not_kept() -> None:
    cache, registry, writer = _cache(chunk_delay=0.02)
    run = await cache.start(REQUEST, META, "c")
    await asyncio.sleep(0.05)
    await registry.cancel(run.id)
    await _settled(cache, registry)
    again = await cache.start(REQUEST, META, "c")
    await _events(registry, again)
    assert again.meta.cache == "miss"
    assert writer.calls == 2


@pytest.mark.parametrize("scenario", ["error_mid_stream", "length"])
async def test_a_failed_or_cut_answer_is_not_served_again(scenario: str) -> None:
    # "length": the writer's own cap cuts the answer, as a provider's would.
    if scenario == "length":
        cache, registry, writer = _cache(max_pieces=5)
        request = REQUEST
    else:
        cache, registry, writer = _cache()
        request = dataclasses.replace(REQUEST, configurable={SCENARIO_CONFIG_KEY: scenario})
    first = await cache.start(request, META, "c")
    first_end = (await _events(registry, first))[-1]
    await _settled(cache, registry)
    again = await cache.start(request, META, "c")
    await _events(registry, again)

    if scenario == "length":
        assert isinstance(first_end, Done)
        assert first_end.summary.finish_reason == "length"
    else:
        assert isinstance(first_end, Failed)
    assert again.meta.cache == "miss"
    assert writer.calls == 2


async def test_joiners_of_a_failed_answer_all_see_its_error() -> None:
    cache, registry, _ = _cache(chunk_delay=0.005)
    request = dataclasses.replace(REQUEST, configurable={SCENARIO_CONFIG_KEY: "error_mid_stream"})
    runs = [await cache.start(request, META, "c") for _ in range(3)]
    ends = [(await _events(registry, run))[-1] for run in runs]
    assert all(isinstance(end, Failed) for end in ends)
    assert {end.error.code for end in ends if isinstance(end, Failed)} == {"upstream_interrupted"}


async def test_no_cache_asks_afresh_and_keeps_the_result_and_no_store_keeps_nothing() -> None:
    cache, registry, writer = _cache()
    await _events(registry, await cache.start(REQUEST, META, "c"))
    await _settled(cache, registry)
    fresh = await cache.start(REQUEST, META, "c", CacheControls(no_cache=True))
    await _events(registry, fresh)
    await _settled(cache, registry)
    unstored_question = dataclasses.replace(REQUEST, question="respiration")
    unstored = await cache.start(unstored_question, META, "c", CacheControls(no_store=True))
    await _events(registry, unstored)
    await _settled(cache, registry)
    after = await cache.start(unstored_question, META, "c")
    await _events(registry, after)

    await _settled(cache, registry)
    replayed = await cache.start(REQUEST, META, "c")  # no-cache's answer was kept

    assert (fresh.meta.cache, unstored.meta.cache, after.meta.cache) == ("bypass", "bypass", "miss")
    assert replayed.meta.cache == "hit"
    assert writer.calls == 4


@pytest.mark.parametrize(
    ("global_scope", "bobs_outcome", "model_calls"), [(False, "miss", 2), (True, "hit", 1)]
)
async def test_clients_do_not_share_answers_unless_the_scope_is_global(
    global_scope: bool, bobs_outcome: str, model_calls: int
) -> None:
    cache, registry, writer = _cache(global_scope=global_scope)
    await _events(registry, await cache.start(REQUEST, META, "alice"))
    await _settled(cache, registry)
    bobs = await cache.start(REQUEST, META, "bob")
    await _events(registry, bobs)
    assert bobs.meta.cache == bobs_outcome
    assert writer.calls == model_calls


async def test_a_full_flight_starts_an_answer_of_its_own() -> None:
    cache, registry, writer = _cache(chunk_delay=0.005, max_readers=2)
    runs = [await cache.start(REQUEST, META, "c") for _ in range(3)]
    await asyncio.gather(*(_events(registry, run) for run in runs))
    assert [run.meta.cache for run in runs] == ["miss", "join", "miss"]
    assert writer.calls == 2


async def test_an_original_paced_replay_keeps_the_gaps_up_to_the_cap() -> None:
    recording = RecordedAnswer(
        ("a", "b", "c"), (0, 30, 5000), AnswerSummary("stop", None, 1.0, 3, 2.0)
    )
    from qa_service.answers.cache.sources import MAX_REPLAY_GAP_SECONDS, ReplaySource

    loop = asyncio.get_running_loop()
    started = loop.time()
    texts = [t async for t in ReplaySource(recording, paced=True).stream(GenerationReport())]
    took = loop.time() - started
    assert texts == ["a", "b", "c"]
    # 30 ms, then 5 s capped: at least their capped sum, far below the original's 5 s.
    assert 0.03 + MAX_REPLAY_GAP_SECONDS <= took + 0.005 < 5.0


def test_a_recording_survives_its_encoding() -> None:
    recording = RecordedAnswer(
        ("caf\u00e9 ", "\ud83c", "\U0001f331", '\n"x"'),
        (12, 0, 0, 7),
        AnswerSummary("stop", {"input_tokens": 1}, 3.5, 8, 9.0, "openai", "gpt"),
    )
    assert RecordedAnswer.decode(recording.encode()) == recording
    assert RecordedAnswer.decode(b'{"format": 99}') is None


@pytest.mark.parametrize(
    ("headers", "no_cache", "no_store"),
    [
        ([], False, False),
        ([("cache-control", "no-cache")], True, False),
        ([("cache-control", "max-age=0, No-Store")], False, True),
        ([("cache-control", "no-transform"), ("cache-control", "no-cache")], True, False),
        # What a browser's EventSource sends by itself (seen from Chromium): not the page's choice.
        ([("cache-control", "no-cache"), ("pragma", "no-cache")], False, False),
        ([("cache-control", "no-store"), ("pragma", "no-cache")], False, True),
    ],
)
def test_cache_control_asks_afresh_but_not_a_browsers_own_no_cache(
    headers: list[tuple[str, str]], no_cache: bool, no_store: bool
) -> None:
    scope = {
        "type": "http",
        "headers": [(name.encode(), value.encode()) for name, value in headers],
    }
    assert cache_controls(Request(scope)) == CacheControls(no_cache, no_store)


async def test_a_joiner_waits_for_a_claimed_flights_log_and_a_dead_claim_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flight is claimed a round trip before its answer's log exists (on Redis,
    a joiner can come in between): that log is waited for, not taken for dead."""
    from qa_service.answers.cache import answer_cache

    monkeypatch.setattr(answer_cache, "_LOG_CREATED_WITHIN", 0.5)
    store = MemoryCacheStore(1 << 20)
    cache, registry, writer = _cache(store=store)
    key = cache_key(REQUEST, "c", SHAPE)
    await store.join_or_start(key, "claimed-by-a-slow-replica", 100, 60)

    async def create_the_log_late() -> None:
        await asyncio.sleep(0.1)
        await registry.store.create("claimed-by-a-slow-replica", "fp", lease_seconds=3.0)

    creating = asyncio.ensure_future(create_the_log_late())
    joined = await cache.start(REQUEST, META, "c")
    await creating
    assert joined.meta.cache == "join"
    await registry.cancel(joined.id)

    other = dataclasses.replace(REQUEST, question="a question whose writer died")
    await store.join_or_start(cache_key(other, "c", SHAPE), "never-created", 100, 60)
    replaced = await cache.start(other, META, "c")
    await _events(registry, replaced)
    assert replaced.meta.cache == "miss"
    assert writer.calls == 1


async def test_a_failed_flight_is_not_joined_by_a_new_question() -> None:
    """A flight can outlive its failed answer a moment (or, with the store down,
    until it expires): a new question asks afresh, not for the old error."""
    store = MemoryCacheStore(1 << 20)
    cache, registry, writer = _cache(store=store)
    failed_id = "a-failed-answer"
    await registry.store.create(failed_id, "fp")
    await registry.store.append(failed_id, Meta(0, META))
    await registry.store.append(failed_id, Failed(1, UPSTREAM_ERROR))
    await store.join_or_start(cache_key(REQUEST, "c", SHAPE), failed_id, 100, 60)

    run = await cache.start(REQUEST, META, "c")
    end = (await _events(registry, run))[-1]

    assert run.meta.cache == "miss"
    assert isinstance(end, Done)
    assert writer.calls == 1


async def test_a_joiner_refused_by_the_store_leaves_the_flight_it_was_counted_in() -> None:
    """Counted in before the store refused it: counted out again, or the flight's
    last reader would never take its count to 0 (and never cancel the call)."""
    store = MemoryCacheStore(1 << 20)
    cache, registry, _ = _cache(store=store)
    key = cache_key(REQUEST, "c", SHAPE)
    await store.join_or_start(key, "written-elsewhere", 100, 60)

    async def store_down(answer_id: str) -> None:
        raise StoreUnavailableError(STORE_UNAVAILABLE)

    registry.store.describe = store_down  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailableError):
        await cache.start(REQUEST, META, "c")
    await _settled(cache, registry)

    assert await store.leave(key, "written-elsewhere") == 0  # its first reader alone


async def test_an_answer_the_fallback_wrote_is_not_kept_under_the_primarys_key() -> None:
    primary = ScriptedModel(script=[_status_error(openai.InternalServerError, 500)])
    writer = AIWriter(with_fallback(primary, _fallback()), PROMPTS)
    timing = RunTiming(close_seconds=1.0, lease_seconds=3.0, grace_seconds=0.0)
    registry = AnswerRegistry(MemoryAnswerStore(300), writer, timing)
    cache = AnswerCache(registry, MemoryCacheStore(1 << 20), CachePolicy(ttl_seconds=60), SHAPE)

    first = await cache.start(REQUEST, META, "c")
    first_end = (await _events(registry, first))[-1]
    await _settled(cache, registry)
    again = await cache.start(REQUEST, META, "c")

    assert isinstance(first_end, Done)
    assert first_end.summary.provider == "fallback-provider"
    assert again.meta.cache == "miss"
