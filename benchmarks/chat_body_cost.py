"""Issue 20, weighed: what a refused POST /api/chat body of about 400 KB costs the service.

    uv run --frozen python -m benchmarks.chat_body_cost [--requests 30]

The body cap (api/deps.py body_limit: about 465 KB with the default limits)
is refused by Content-Length, or by the bytes counted as they arrive, before
anything is parsed. Below it, a body is parsed, then refused by its shape.
What that costs depends on the body's shape, not its size: one long text is
one JSON string, while thousands of tiny messages or parts are thousands of
objects. Each body here is refused (422), so the figure is the service's CPU
per refusal (the whole process, measured over `--requests` requests).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import psutil
from tests.support.service import run_service

CHAT_ID = "chat-0123456789abcdef"


def _body(messages: list[dict[str, Any]]) -> bytes:
    return json.dumps({"id": CHAT_ID, "messages": messages}).encode()


def _text(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "text": text}]}


BODIES = {
    "one history text of 385,000 characters": _body(
        [_text("user", "x" * 385_000), _text("user", "q")]
    ),
    "a question of 385,000 characters": _body([_text("user", "x" * 385_000)]),
    "50 history messages of 7,600 characters": _body(
        [_text("user", "x" * 7_600)] * 50 + [_text("user", "q")]
    ),
    # Refused only once parsed: the last message is not the user's.
    "14,000 empty messages": _body(
        [{"role": "user", "parts": []}] * 14_000 + [_text("assistant", "a")]
    ),
    "16,000 step-start parts": _body(
        [{"role": "user", "parts": [{"type": "step-start"}] * 16_000}, _text("assistant", "a")]
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args(argv)
    settings = {"QA_PROVIDER": "demo", "QA_LOG_LEVEL": "warning"}
    with TemporaryDirectory() as tmp, run_service(settings, Path(tmp)) as service:
        process = psutil.Process(service.process.pid)
        with httpx.Client(base_url=service.url, timeout=30) as client:
            for name, body in BODIES.items():
                _post(client, body)  # warm
                before = sum(process.cpu_times()[:2])
                codes = {_post(client, body) for _ in range(args.requests)}
                cpu_ms = (sum(process.cpu_times()[:2]) - before) / args.requests * 1000
                print(f"{name:42s} {len(body):7,d} B  {sorted(codes)}  {cpu_ms:6.1f} ms CPU each")


def _post(client: httpx.Client, body: bytes) -> int:
    headers = {"content-type": "application/json"}
    return client.post("/api/chat", content=body, headers=headers).status_code


if __name__ == "__main__":
    main()
