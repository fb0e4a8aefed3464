"""Admission's parts on the in-memory counters: order of checks, headers, slots."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import anyio
import pytest
from limits.aio.storage import MemoryStorage
from starlette.requests import Request

from qa_service.access.admission import Admission
from qa_service.access.capacity import StreamCapacity
from qa_service.access.quotas import ClientQuotas, format_duration
from qa_service.access.slots import SlotKeeper
from qa_service.answers.run import AnswerRun
from qa_service.api.deps import CLIENT_KEY_ID, client_of
from qa_service.config import Settings
from qa_service.core.errors import QAServiceError
from qa_service.stores.memory_slots import MemorySlotStore


def build_admission(
    *,
    streams: int = 10,
    rate: str | None = None,
    budget: str | None = None,
    per_client: int | None = None,
) -> Admission:
    return Admission(
        StreamCapacity(streams),
        ClientQuotas(MemoryStorage(), rate, budget),
        SlotKeeper(MemorySlotStore(), 30),
        per_client,
    )


@pytest.mark.parametrize(
    ("seconds", "written"),
    [
        (0.0201, "21ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (3723.25, "1h2m3.25s"),
        (86400, "24h0m0s"),
    ],
)
def test_resets_are_written_as_openai_writes_them(seconds: float, written: str) -> None:
    assert format_duration(seconds) == written


async def test_over_capacity_is_refused_before_the_client_is_counted() -> None:
    admission = build_admission(streams=1, rate="5/minute")
    first = await admission.admit("a")

    with pytest.raises(QAServiceError) as refused:
        await admission.admit("a")
    await admission.give_back(first)
    second = await admission.admit("a")

    assert refused.value.public.code == "over_capacity"
    assert refused.value.public.retry_after_seconds == 1
    # The refused request was not counted against the client's rate.
    assert first.headers["x-ratelimit-remaining-requests"] == "4"
    assert second.headers["x-ratelimit-remaining-requests"] == "3"


async def test_a_refusal_gives_back_the_place_it_took() -> None:
    admission = build_admission(streams=1, rate="1/minute")
    await admission.give_back(await admission.admit("a"))

    with pytest.raises(QAServiceError) as refused:
        await admission.admit("a")

    assert refused.value.public.code == "rate_limited"
    assert refused.value.public.status == 429
    assert 1 <= (refused.value.public.retry_after_seconds or 0) <= 60
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert admission.capacity.in_use == 0
    # Another client is not affected.
    assert (await admission.admit("b")).client == "b"


async def test_a_client_at_its_streams_is_refused_until_one_ends() -> None:
    admission = build_admission(per_client=2)
    first = await admission.admit("a")
    await admission.admit("a")

    with pytest.raises(QAServiceError) as refused:
        await admission.admit("a")
    assert refused.value.public.code == "too_many_streams"
    assert admission.slots.held == 2
    assert admission.capacity.in_use == 2

    await admission.give_back(first)
    assert admission.slots.held == 1
    await admission.admit("a")


class SlowChargeQuotas(ClientQuotas):
    """Counters whose token charge takes a while, as a Redis round trip does."""

    def __init__(self, budget: str) -> None:
        super().__init__(MemoryStorage(), None, budget)
        self.charging = asyncio.Event()
        self.charge_may_land = asyncio.Event()

    async def charge_tokens(self, client: str, tokens: int) -> None:
        if tokens > 0:  # nothing to charge is no round trip
            self.charging.set()
            await self.charge_may_land.wait()
        await super().charge_tokens(client, tokens)


async def test_an_answers_tokens_are_charged_before_its_slot_is_given_back() -> None:
    """Else a client waiting at QA_CLIENT_MAX_STREAMS starts its next answer in
    the round trip between the two, with the budget not yet showing the last."""
    quotas = SlowChargeQuotas("100/day")
    admission = Admission(StreamCapacity(10), quotas, SlotKeeper(MemorySlotStore(), 30), 1)
    admitted = await admission.admit("a")
    ended = asyncio.get_running_loop().create_future()
    run = SimpleNamespace(start=lambda: ended, billed_tokens=150)
    admission.release_when_ended(admitted, cast(AnswerRun, run))

    ended.set_result(None)  # the answer ends, 150 tokens over a budget of 100
    with anyio.fail_after(5):
        await quotas.charging.wait()
    with anyio.fail_after(5), pytest.raises(QAServiceError) as while_charging:
        await admission.admit("a")
    quotas.charge_may_land.set()
    await admission.drain()
    with pytest.raises(QAServiceError) as after:
        await admission.admit("a")

    assert while_charging.value.public.code == "too_many_streams"
    assert after.value.public.code == "budget_exhausted"
    assert (admission.slots.held, admission.capacity.in_use) == (0, 0)


class FailingChargeQuotas(ClientQuotas):
    def __init__(self, limit: str) -> None:
        super().__init__(MemoryStorage(), None, limit)

    async def charge_tokens(self, client: str, tokens: int) -> None:
        raise RuntimeError("a charge that fails in a way nobody foresaw")


async def test_a_charge_that_fails_unforeseen_still_gives_the_slot_and_capacity_back() -> None:
    admission = Admission(
        StreamCapacity(10), FailingChargeQuotas("100/day"), SlotKeeper(MemorySlotStore(), 30), 1
    )
    admitted = await admission.admit("a")

    with pytest.raises(RuntimeError):
        await admission._give_back(admitted, 150)

    assert (admission.slots.held, admission.capacity.in_use) == (0, 0)


async def test_a_budget_takes_a_charge_past_its_limit_and_then_refuses() -> None:
    quotas = ClientQuotas(MemoryStorage(), None, "100/day")
    await quotas.charge_tokens("a", 60)
    left = await quotas.tokens_left("a")
    assert left is not None
    assert (left.remaining, left.spent) == (40, False)

    await quotas.charge_tokens("a", 60)
    left = await quotas.tokens_left("a")

    assert left is not None
    assert (left.remaining, left.spent) == (0, True)
    assert 86000 < left.reset_seconds <= 86400


@pytest.mark.parametrize(
    "value", ["bogus", "0/minute", "-5/day", "60/fortnight", "60/minute;1000/day", "1/s,2/m"]
)
def test_a_limit_that_is_not_an_amount_per_period_stops_start_up(value: str) -> None:
    with pytest.raises(ValueError, match="amount per period"):
        Settings(rate_limit=value)


def test_a_blank_limit_is_no_limit() -> None:
    assert Settings(rate_limit=" ", client_token_budget="").rate_limit is None


def request_from(host: str, **settings: object) -> Request:
    """A request from `host` to an app whose service has these settings."""
    service = SimpleNamespace(settings=Settings(_env_file=None, **settings))  # type: ignore[call-arg]
    app = SimpleNamespace(state=SimpleNamespace(service=service))
    scope = {"type": "http", "client": (host, 1234), "headers": [], "state": {}, "app": app}
    return Request(scope)


@pytest.mark.parametrize(
    ("host", "client"),
    [
        ("203.0.113.7", "ip:203.0.113.7"),
        ("2001:db8:1:200:aaaa::1", "ip:2001:db8:1:200::/56"),
        ("2001:db8:1:2ff:bbbb::9", "ip:2001:db8:1:200::/56"),  # another /64 of that /56
        ("2001:db8:1:300::1", "ip:2001:db8:1:300::/56"),
        ("::ffff:203.0.113.7", "ip:203.0.113.7"),
        ("testclient", "ip:testclient"),
    ],
)
def test_a_client_is_its_address_and_an_ipv6_host_its_56(host: str, client: str) -> None:
    assert client_of(request_from(host)) == client


@pytest.mark.parametrize(
    ("prefix", "client"),
    [(48, "ip:2001:db8:1::/48"), (64, "ip:2001:db8:1:2ff::/64"), (128, "ip:2001:db8:1:2ff::9/128")],
)
def test_the_ipv6_block_a_client_counts_as_is_a_setting(prefix: int, client: str) -> None:
    request = request_from("2001:db8:1:2ff::9", ipv6_client_prefix=prefix)
    assert client_of(request) == client


def test_with_a_key_the_client_is_the_key() -> None:
    request = request_from("203.0.113.7")
    setattr(request.state, CLIENT_KEY_ID, "key:ops")
    assert client_of(request) == "key:ops"


async def test_a_client_waiting_for_a_stream_does_not_spend_its_rate() -> None:
    admission = build_admission(rate="2/minute", per_client=1)
    first = await admission.admit("a")
    for _ in range(3):  # polling, as too_many_streams' Retry-After says
        with pytest.raises(QAServiceError) as refused:
            await admission.admit("a")
        assert refused.value.public.code == "too_many_streams"
    await admission.give_back(first)

    second = await admission.admit("a")

    assert second.headers["x-ratelimit-remaining-requests"] == "0"
