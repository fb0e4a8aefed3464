"""Reading part of an answer, hanging up, and reading on from another replica."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource

from tests.support.daemon import wait_until
from tests.support.sse import DeadlinedResponse


@dataclass
class Read:
    status: int
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    body: bytes = b""
    # When each event arrived (time.monotonic).
    arrived: list[float] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(e["text"] for e in self.events if "text" in e)

    @property
    def answer_id(self) -> str:
        return str(self.events[0]["meta"]["answer_id"])

    @property
    def last_id(self) -> str:
        return self.ids[-1]

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]

    def error(self) -> dict[str, Any]:
        return dict(json.loads(self.body)["error"])


def read(
    base_url: str,
    path: str = "/ai_write",
    *,
    params: dict[str, str] | None = None,
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
    texts: int | None = None,
    timeout: float = 20.0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> Read:
    """Read a stream to its end, or hang up after `texts` text events.

    The whole read is bounded by `timeout`; keep-alives cannot stretch it.
    """
    # Not httpx-sse's connect_sse: it sends `Cache-Control: no-store`, which the
    # answer cache honours (a bypass). Only the caller's Cache-Control goes here.
    headers = {"Accept": "text/event-stream", **(headers or {})}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    deadline = time.monotonic() + timeout
    seen = 0
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("GET", f"{base_url}{path}", params=params, headers=headers) as response,
    ):
        result = Read(response.status_code, response.headers)
        if response.status_code != 200:
            result.body = response.read()
            return result
        source = EventSource(DeadlinedResponse(response, deadline))  # type: ignore[arg-type]
        for sse in source.iter_sse():
            payload = json.loads(sse.data)
            result.events.append(payload)
            result.ids.append(sse.id)
            result.arrived.append(time.monotonic())
            if on_event is not None:
                on_event(payload)
            seen += "text" in payload
            if texts is not None and seen >= texts:
                break  # leaving the `with` closes the connection: a hang-up
    return result


def seqs(ids: list[str]) -> list[int]:
    return [int(event_id.rsplit(":", 1)[1]) for event_id in ids if event_id]


class AnswerIdWatch:
    """Pass as `on_event` to a read in another thread; `wait()` gives its answer id."""

    def __init__(self) -> None:
        self._meta = threading.Event()
        self._answer_id = ""

    def __call__(self, payload: dict[str, Any]) -> None:
        if "meta" in payload:
            self._answer_id = str(payload["meta"]["answer_id"])
            self._meta.set()

    def wait(self, timeout: float = 10.0) -> str:
        assert self._meta.wait(timeout), "no meta event in time"
        return self._answer_id


class EventWatch:
    """Pass as `on_event` to a read in another thread; `wait(n)` returns once
    that read has had `n` events (it is following the answer live)."""

    def __init__(self) -> None:
        self._seen = 0
        self._changed = threading.Condition()

    def __call__(self, payload: dict[str, Any]) -> None:
        with self._changed:
            self._seen += 1
            self._changed.notify_all()

    def wait(self, count: int = 1, timeout: float = 10.0) -> None:
        with self._changed:
            reached = self._changed.wait_for(lambda: self._seen >= count, timeout)
        assert reached, f"{self._seen} events in {timeout} s, expected {count}"


def attach_readers(
    pool: ThreadPoolExecutor, url: str, answer_id: str, count: int, timeout: float = 120
) -> list[Future[Read]]:
    """`count` readers of the answer by id at `url`, each reading it to its end
    in `pool`; returns once every one has its first event (or has ended)."""
    attached = [threading.Event() for _ in range(count)]
    readers = [
        pool.submit(
            read,
            url,
            f"/answers/{answer_id}/events",
            on_event=lambda _, seen=seen: seen.set(),
            timeout=timeout,
        )
        for seen in attached
    ]
    wait_until(
        lambda: all(s.is_set() or r.done() for s, r in zip(attached, readers, strict=True)),
        60,
        "every reader attached",
    )
    return readers
