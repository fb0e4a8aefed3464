"""QA_RATE_LIMIT and QA_CLIENT_TOKEN_BUDGET, counted by the `limits` library.

Requests use a moving window: "60/minute" means at most 60 in any 60 s,
with no burst of 120 across a window's edge. Tokens use a fixed window
("200000/day" resets once a day), because an answer's tokens are known only
when it ends: a fixed window's counter takes a charge past the limit (a long
last answer is charged in full), where a moving window would refuse it and
count nothing. The next request then finds the budget spent.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.errors import StorageError

from qa_service.core.errors import StoreUnavailableError


@dataclass(frozen=True, slots=True)
class QuotaState:
    """One limit as a client sees it: the x-ratelimit-* headers."""

    limit: int
    remaining: int
    reset_seconds: float

    @property
    def spent(self) -> bool:
        return self.remaining <= 0

    def headers(self, unit: str) -> dict[str, str]:
        """OpenAI's names and formats: `unit` is `requests` or `tokens`."""
        return {
            f"x-ratelimit-limit-{unit}": str(self.limit),
            f"x-ratelimit-remaining-{unit}": str(max(0, self.remaining)),
            f"x-ratelimit-reset-{unit}": format_duration(self.reset_seconds),
        }


class ClientQuotas:
    def __init__(self, storage: Storage, rate: str | None, budget: str | None) -> None:
        self._rate: RateLimitItem | None = parse(rate) if rate else None
        self._budget: RateLimitItem | None = parse(budget) if budget else None
        self._requests = MovingWindowRateLimiter(storage)
        self._tokens = FixedWindowRateLimiter(storage)

    async def take_request(self, client: str) -> tuple[bool, QuotaState | None]:
        """Count one request; False when it is over the rate (and then not counted)."""
        if self._rate is None:
            return True, None
        async with _store_errors():
            allowed = await self._requests.hit(self._rate, "requests", client)
            stats = await self._requests.get_window_stats(self._rate, "requests", client)
        return allowed, _state(self._rate, stats.remaining, stats.reset_time)

    async def tokens_left(self, client: str) -> QuotaState | None:
        if self._budget is None:
            return None
        async with _store_errors():
            stats = await self._tokens.get_window_stats(self._budget, "tokens", client)
        return _state(self._budget, stats.remaining, stats.reset_time)

    async def charge_tokens(self, client: str, tokens: int) -> None:
        if self._budget is None or tokens <= 0:
            return
        async with _store_errors():
            await self._tokens.hit(self._budget, "tokens", client, cost=tokens)


def _state(item: RateLimitItem, remaining: int, reset_time: float) -> QuotaState:
    # An empty window reports "now" as its reset; it would reset a whole period on.
    reset = reset_time - time.time()
    if reset <= 0:
        reset = float(item.get_expiry())
    return QuotaState(item.amount, remaining, reset)


@asynccontextmanager
async def _store_errors() -> AsyncIterator[None]:
    try:
        yield
    except StorageError:
        raise StoreUnavailableError from None


def format_duration(seconds: float) -> str:
    """As OpenAI writes x-ratelimit-reset-*: 20ms, 1.5s, 6m0s, 1h2m3s."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds * 1000) / 1000
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text
