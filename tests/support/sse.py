"""Reading the service's event stream in tests, with a real SSE parser (httpx-sse)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource, connect_sse


@dataclass
class Stream:
    status: int
    headers: httpx.Headers
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    # When each event arrived (time.monotonic), for tests of timeouts.
    arrived: list[float] = field(default_factory=list)
    body: bytes = b""

    @property
    def text(self) -> str:
        return "".join(e["text"] for e in self.events if "text" in e)

    @property
    def kinds(self) -> list[str]:
        return [next(iter(e)) for e in self.events]

    @property
    def shape(self) -> list[str]:
        """`kinds` with each run of text events as one: chunks that reach the
        service together go out as one text event (generation/batching.py)."""
        return [
            k
            for i, k in enumerate(self.kinds)
            if k != "text" or i == 0 or self.kinds[i - 1] != "text"
        ]

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]


class DeadlinedResponse:
    """A response whose text stops with an AssertionError at `deadline`.

    Keep-alive comments arrive every fraction of a second and dispatch no
    event, so a check per event would never run on a stream that never ends.
    """

    def __init__(self, response: httpx.Response, deadline: float) -> None:
        self._response = response
        self._deadline = deadline

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def iter_text(self) -> Iterator[str]:
        for text in self._response.iter_text():
            if time.monotonic() > self._deadline:
                raise AssertionError("the stream is still open at its deadline")
            yield text


def read_stream(
    base_url: str,
    *,
    method: str = "GET",
    params: dict[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Stream:
    """The whole response: events parsed as JSON, or the JSON error body.

    `timeout` bounds the whole read, not just each wait: keep-alives would
    otherwise keep a stream that never ends alive for ever.
    """
    deadline = time.monotonic() + timeout
    with (
        httpx.Client(timeout=timeout) as client,
        connect_sse(
            client,
            method,
            f"{base_url}/ai_write",
            params=params,
            json=json_body,
            headers=dict(headers or {}),
        ) as src,
    ):
        response = src.response
        stream = Stream(response.status_code, response.headers)
        if response.status_code != 200:
            stream.body = response.read()
            return stream
        for sse in EventSource(DeadlinedResponse(response, deadline)).iter_sse():  # type: ignore[arg-type]
            stream.events.append(json.loads(sse.data))
            stream.ids.append(sse.id)
            stream.arrived.append(time.monotonic())
            assert sse.event == "message", "every event must reach EventSource.onmessage"
        return stream


def hang_up_after(
    base_url: str,
    query: str,
    kind: str = "text",
    before_hanging_up: Callable[[], None] | None = None,
) -> tuple[float, str]:
    """Read until the first event of `kind`, then drop the connection.

    Returns when it hung up (time.monotonic) and the request id.
    `before_hanging_up` runs while the stream is still open.
    """
    with httpx.stream("GET", f"{base_url}/ai_write", params={"query": query}) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and kind in json.loads(line[6:]):
                # Here, not after the loop: leaving iter_lines() closes the response.
                if before_hanging_up is not None:
                    before_hanging_up()
                break
    return time.monotonic(), response.headers["x-request-id"]
