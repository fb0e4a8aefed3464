"""A client that reads one answer to its end, resuming with Last-Event-ID as a browser would.

It asks `GET /ai_write`, then, whenever its connection ends without the
answer's last event (a drop, a cut-off body, or an `error` event without an
`id:`, which ends this connection only), asks the same URL again with the
last id it had, through whatever proxy it was given. A refusal that says it
may be retried (a 5xx with a retryable JSON error, `shutting_down` from a
draining instance, say) is retried after its Retry-After. Every wait is
bounded by one deadline for the whole read.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource, connect_sse

from tests.support.sse import DeadlinedResponse

# The longest Retry-After it honours; a draining instance asks for 1 s.
MAX_RETRY_WAIT = 2.0
# Before it reconnects after a drop or a move (the service's `retry:` is 1 s;
# shorter here, and never a tight loop).
RECONNECT_WAIT = 0.1
# A read that needs more requests than this is failing, whatever the deadline.
MAX_ATTEMPTS = 30


@dataclass
class Attempt:
    """One request of the read, and how it ended."""

    request_id: str
    status: int = 0
    # "done", "error" (an event with an id: the answer's end), "moved" (an
    # error without an id), "dropped" (no last event), "refused" (not 200).
    ended: str = ""
    events: int = 0
    refusal: dict[str, Any] | None = None


@dataclass
class ResumedRead:
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    # When each event arrived (time.monotonic).
    arrived: list[float] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(e["text"] for e in self.events if "text" in e)

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]

    @property
    def request_id(self) -> str:
        """The id the answer was started (and is logged) under."""
        return str(self.events[0]["meta"]["request_id"])

    @property
    def seqs(self) -> list[int]:
        return [int(event_id.rsplit(":", 1)[1]) for event_id in self.ids]

    def texts(self) -> int:
        return sum("text" in e for e in self.events)


class ReadFailedError(AssertionError):
    """The read could not go on: refused for good, or dropped before any event id."""


def read_resuming(
    base_url: str,
    query: str,
    *,
    timeout: float = 60.0,
    hang_up: threading.Event | None = None,
    progress: threading.Condition | None = None,
    into: ResumedRead | None = None,
) -> ResumedRead:
    """Read the answer to `query` to its last event, resuming as often as needed.

    `hang_up`: once set, the client drops its connection at its next event
    (once) and resumes, as a phone changing networks would. `progress` is
    notified after every event (wait on it for a number of texts); `into`
    is filled as the read goes, for a test that looks before it ends.
    """
    deadline = time.monotonic() + timeout
    result = into if into is not None else ResumedRead()
    hung_up = False
    while True:
        if time.monotonic() > deadline or len(result.attempts) >= MAX_ATTEMPTS:
            raise ReadFailedError(
                f"no last event in {timeout:g} s or {MAX_ATTEMPTS} requests: {result.attempts}"
            )
        headers = {"X-Request-ID": uuid.uuid4().hex}
        if result.ids:
            headers["Last-Event-ID"] = result.ids[-1]
        elif result.attempts and result.attempts[-1].status == 200:
            raise ReadFailedError(f"dropped before the first event id: {result.attempts}")
        attempt = Attempt(headers["X-Request-ID"])
        result.attempts.append(attempt)
        drop_now = hang_up if not hung_up else None
        try:
            _one_request(base_url, query, headers, deadline, result, attempt, drop_now, progress)
        except (httpx.TransportError, httpx.RemoteProtocolError):
            attempt.ended = "dropped"
        if attempt.ended in ("done", "error"):
            return result
        if attempt.ended == "hung_up":
            hung_up = True
        elif attempt.ended in ("moved", "dropped"):
            time.sleep(RECONNECT_WAIT)
        elif attempt.ended == "refused":
            refusal = attempt.refusal or {}
            if not refusal.get("retryable"):
                raise ReadFailedError(f"refused for good: {result.attempts}")
            time.sleep(min(float(refusal.get("retry_after", 0.2)), MAX_RETRY_WAIT))


def _one_request(
    base_url: str,
    query: str,
    headers: dict[str, str],
    deadline: float,
    result: ResumedRead,
    attempt: Attempt,
    hang_up: threading.Event | None,
    progress: threading.Condition | None,
) -> None:
    left = max(deadline - time.monotonic(), 0.1)
    with (
        httpx.Client(timeout=httpx.Timeout(left, connect=min(left, 5.0))) as client,
        connect_sse(
            client, "GET", f"{base_url}/ai_write", params={"query": query}, headers=headers
        ) as source,
    ):
        response = source.response
        attempt.status = response.status_code
        if response.status_code != 200:
            attempt.ended = "refused"
            attempt.refusal = _refusal(response)
            return
        attempt.ended = "dropped"  # unless a last event or a move says otherwise
        for sse in EventSource(DeadlinedResponse(response, deadline)).iter_sse():  # type: ignore[arg-type]
            payload = json.loads(sse.data)
            if not sse.id:
                # This connection's end, not the answer's: resume elsewhere.
                assert "error" in payload, payload
                assert payload["error"]["retryable"], payload
                attempt.ended = "moved"
                return
            result.events.append(payload)
            result.ids.append(sse.id)
            result.arrived.append(time.monotonic())
            attempt.events += 1
            if progress is not None:
                with progress:
                    progress.notify_all()
            if "done" in payload or "error" in payload:
                attempt.ended = "done" if "done" in payload else "error"
                return
            if hang_up is not None and hang_up.is_set():
                attempt.ended = "hung_up"
                return  # leaving the `with` closes the connection


def _refusal(response: httpx.Response) -> dict[str, Any]:
    """What a refusal says: its JSON error (code, retryable), and its Retry-After."""
    try:
        error = dict(json.loads(response.read())["error"])
    except (ValueError, KeyError, TypeError):
        error = {"code": f"http_{response.status_code}", "retryable": False}
    if "retry-after" in response.headers:
        error["retry_after"] = response.headers["retry-after"]
    return error
