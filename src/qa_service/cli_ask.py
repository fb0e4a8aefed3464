"""`qa-service ask`: stream an answer from a running service to the terminal.

stdout gets the answer and nothing else (or, with --json, the events as JSON
lines), so it can be piped; notes, the closing summary and errors go to
stderr. It imports httpx and, only when no --url is given, the settings, never
LangChain: `qa-service ask --help` must answer at once.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
from httpx_sse import connect_sse

# Exit statuses: 130 is the shell's convention for "ended by SIGINT".
OK, FAILED, CONFIG_ERROR, INTERRUPTED = 0, 1, 2, 130


def default_url(host: str | None = None, port: int | None = None) -> str:
    """Where `qa-service serve` listens: the same flags, settings and `.env` it reads."""
    from qa_service.config import load_settings

    return load_settings(runnable=False).with_address(host, port).local_url


@dataclass
class _Progress:
    """What the terminal has seen of one answer."""

    json_lines: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    request_id: str = ""
    open_line: bool = False  # answer text written without a final newline

    def event(self, event: dict[str, Any]) -> None:
        if self.json_lines:
            self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.out.flush()
        if "meta" in event:
            self.request_id = event["meta"].get("request_id", "")
            if event["meta"].get("notice"):
                print(f"note: {event['meta']['notice']}", file=self.err)
        elif "text" in event and not self.json_lines:
            self.out.write(event["text"])
            self.out.flush()
            self.open_line = not event["text"].endswith("\n")

    def end_line(self) -> None:
        if self.open_line:
            self.out.write("\n")
            self.out.flush()
            self.open_line = False

    def summary(self, done: dict[str, Any]) -> None:
        self.end_line()
        usage = done.get("usage") or {}
        tokens = (
            f"{usage['output_tokens']} tokens out, {usage['input_tokens']} in"
            if usage
            else "token usage not reported"
        )
        ttft = done.get("ttft_ms")
        first = "no text" if ttft is None else f"first text after {_ms(ttft)}"
        print(
            f"done: {first}, {tokens}, finish_reason {done.get('finish_reason')}, "
            f"{_ms(done.get('duration_ms'))} in all (request {self.request_id})",
            file=self.err,
        )

    def failure(self, error: dict[str, Any]) -> int:
        self.end_line()
        retry = " (retryable)" if error.get("retryable") else ""
        request = f" (request {self.request_id})" if self.request_id else ""
        print(
            f"qa-service: {error.get('code')}: {error.get('message')}{retry}{request}",
            file=self.err,
        )
        return FAILED


def ask(
    url: str, question: str, prompt: str | None, scenario: str | None, *, json_lines: bool
) -> int:
    """Ask `question` at `url` (trailing slash or not) and stream the answer."""
    base = url.rstrip("/")
    body = {"query": question, "prompt": prompt, "scenario": scenario}
    payload = {key: value for key, value in body.items() if value is not None}
    progress = _Progress(json_lines)
    try:
        return _stream(base, payload, progress)
    except KeyboardInterrupt:
        # Leaving the `with` blocks closed the connection, and the service
        # cancels an answer whose client has gone, upstream request included.
        progress.end_line()
        print("qa-service: stopped (Ctrl-C); the service cancels the answer", file=sys.stderr)
        return INTERRUPTED
    except httpx.HTTPError as exc:
        progress.end_line()
        print(
            f"qa-service: cannot reach {base}: {type(exc).__name__} "
            "(is the service running? ./scripts/serve.sh starts it; --url points elsewhere)",
            file=sys.stderr,
        )
        return FAILED


def _stream(base: str, payload: dict[str, str], progress: _Progress) -> int:
    timeout = httpx.Timeout(10.0, read=None)
    with (
        httpx.Client(timeout=timeout) as client,
        connect_sse(client, "POST", f"{base}/ai_write", json=payload) as source,
    ):
        response = source.response
        if response.status_code != 200:
            response.read()
            progress.request_id = response.headers.get("x-request-id", "")
            refusal = _json_or_none(response)
            error = (refusal or {}).get("error") or {
                "code": f"http_{response.status_code}",
                "message": f"{base} answered {response.status_code}, not a qa-service refusal.",
            }
            if progress.json_lines:
                progress.event({"error": error})
            return progress.failure(error)
        for sse in source.iter_sse():
            event = json.loads(sse.data)
            progress.event(event)
            if "done" in event:
                progress.summary(event["done"])
                return OK
            if "error" in event:
                return progress.failure(event["error"])
    progress.end_line()
    print("qa-service: the stream ended without a done or error event", file=sys.stderr)
    return FAILED


def _json_or_none(response: httpx.Response) -> dict[str, Any] | None:
    try:
        parsed = response.json()
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _ms(value: object) -> str:
    if not isinstance(value, int | float):
        return "?"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{round(value)} ms"
