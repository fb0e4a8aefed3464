"""The adaptive limit's moves, sample by sample, and the capacity's three bounds."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from qa_service.access.adaptive_limit import AdaptiveLimit, LoopLagProbe
from qa_service.access.admission import build_capacity
from qa_service.access.capacity import StreamCapacity
from qa_service.access.descriptors import streams_within
from qa_service.config import Settings

TARGET = 0.025


def lagging(limit: AdaptiveLimit, lag: float, in_flight: int, samples: int) -> None:
    for _ in range(samples):
        limit.observe(lag, in_flight)


def test_a_loop_that_falls_behind_brings_the_limit_down_to_what_runs() -> None:
    limit = AdaptiveLimit(ceiling=1000, floor=4, target_lag_seconds=TARGET)

    lagging(limit, 1.0, in_flight=40, samples=4)

    # Half of the answers in flight at the most (Gradient2's bound on a cut),
    # never the stale ceiling.
    assert limit.limit == 20
    assert limit.lag > TARGET


def test_the_limit_never_comes_down_below_its_floor() -> None:
    limit = AdaptiveLimit(ceiling=1000, floor=4, target_lag_seconds=TARGET)

    lagging(limit, 1.0, in_flight=2, samples=10)

    assert limit.limit == 4


def test_one_late_sample_among_quick_ones_does_not_move_it() -> None:
    limit = AdaptiveLimit(ceiling=100, floor=4, target_lag_seconds=TARGET)
    lagging(limit, 0.001, in_flight=10, samples=10)

    limit.observe(0.08, in_flight=10)  # a collection, a long callback

    assert limit.limit == 100


def test_a_binding_limit_probes_upward_one_answer_a_sample() -> None:
    limit = AdaptiveLimit(ceiling=1000, floor=4, target_lag_seconds=TARGET)
    lagging(limit, 1.0, in_flight=40, samples=4)
    lagging(limit, 0.0, in_flight=20, samples=12)  # the lag decays below the target
    probing_from = limit.limit

    lagging(limit, 0.0, in_flight=probing_from, samples=5)

    assert limit.limit == probing_from + 5


def test_a_limit_far_above_what_runs_grows_back_to_the_ceiling() -> None:
    limit = AdaptiveLimit(ceiling=1000, floor=4, target_lag_seconds=TARGET)
    lagging(limit, 1.0, in_flight=40, samples=4)

    lagging(limit, 0.0, in_flight=0, samples=200)

    assert limit.limit == 1000


def test_capacity_refuses_at_the_lowest_of_its_bounds_and_says_once_when_files_run_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adaptive = AdaptiveLimit(ceiling=10, floor=1, target_lag_seconds=TARGET)
    capacity = StreamCapacity(10, descriptors_allow=3, adaptive=adaptive)
    refused_by: list[str] = []
    capacity.on_refused = refused_by.append
    with caplog.at_level(logging.WARNING, "qa_service.access.capacity"):
        taken = [capacity.try_take() for _ in range(5)]

    assert taken == [True, True, True, False, False]
    assert refused_by == ["open_files", "open_files"]
    assert capacity.current_limit() == 3
    said = [r for r in caplog.records if "open file limit" in r.getMessage()]
    assert len(said) == 1

    lagging(adaptive, 1.0, in_flight=capacity.in_use, samples=4)
    capacity.give_back()
    capacity.give_back()

    assert capacity.current_limit() == 1
    assert capacity.try_take() is False  # one in use, a limit of one
    assert refused_by == ["open_files", "open_files", "adaptive"]


def test_the_open_file_limit_leaves_room_for_the_reserve_and_two_files_an_answer() -> None:
    assert streams_within(1024, redis=False, idle_connections=10) == 437
    assert streams_within(1024, redis=True, idle_connections=10) == 291
    assert streams_within(100, redis=False, idle_connections=10) == 0
    assert streams_within(None, redis=False, idle_connections=10) is None


def test_the_idle_provider_connections_come_out_of_the_open_file_limit() -> None:
    assert streams_within(1024, redis=False, idle_connections=210) == 337


async def test_the_probe_reports_how_late_a_blocked_loop_fired_it() -> None:
    lags: list[float] = []
    enough = asyncio.Event()

    def on_lag(lag: float) -> None:
        lags.append(lag)
        if len(lags) >= 10:
            enough.set()

    probe = LoopLagProbe(on_lag, interval=0.01)
    probe.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # noqa: ASYNC251 - the point: the loop is held, the timer comes due and waits
        async with asyncio.timeout(10):
            await enough.wait()
    finally:
        probe.stop()

    assert max(lags) >= 0.25


def test_answers_are_capped_at_the_provider_pool_when_it_is_the_lower_bound() -> None:
    # One admitted past the pool would wait for a connection through the SDK's
    # retries and the fallback's (about 16 s) only to end over_capacity.
    settings = Settings(max_streams=1000, upstream_max_connections=3)
    capacity = build_capacity(settings)
    refused_by: list[str] = []
    capacity.on_refused = refused_by.append

    assert [capacity.try_take() for _ in range(4)] == [True, True, True, False]
    assert capacity.current_limit() == 3
    assert refused_by == ["max_streams"]


def test_with_the_adaptive_limit_off_the_lag_is_still_measured_and_never_refuses() -> None:
    capacity = build_capacity(Settings(adaptive_limit=False, max_streams=5))
    for _ in range(40):
        capacity.loop_lag.observe(0.5, in_flight=capacity.in_use)

    assert capacity.adaptive is None
    assert capacity.loop_lag.lag > 0.4
    assert [capacity.try_take() for _ in range(5)] == [True] * 5
