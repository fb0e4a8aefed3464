"""Reading the service's event stream in tests, with a real SSE parser (httpx-sse)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import connect_sse


@dataclass
class Stream:
    status: int
    headers: httpx.Headers
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    body: bytes = b""

    @property
    def text(self) -> str:
        return "".join(e["text"] for e in self.events if "text" in e)

    @property
    def kinds(self) -> list[str]:
        return [next(iter(e)) for e in self.events]

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]


def read_stream(
    base_url: str,
    *,
    method: str = "GET",
    params: dict[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
    timeout: float = 30.0,
) -> Stream:
    """The whole response: events parsed as JSON, or the JSON error body."""
    with (
        httpx.Client(timeout=timeout) as client,
        connect_sse(client, method, f"{base_url}/ai_write", params=params, json=json_body) as src,
    ):
        response = src.response
        stream = Stream(response.status_code, response.headers)
        if response.status_code != 200:
            stream.body = response.read()
            return stream
        for sse in src.iter_sse():
            stream.events.append(json.loads(sse.data))
            stream.ids.append(sse.id)
            assert sse.event == "message", "every event must reach EventSource.onmessage"
        return stream
