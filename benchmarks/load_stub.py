"""The upstream stub for benchmarks/load.py, on uvloop, with one scripted reply per marker.

    python -m benchmarks.load_stub '{"mk-load": {"pieces": [...], "first_delay": 0.05,
                                                 "piece_delay": 0.02}, ...}'

Prints its port, then serves until killed. A request whose messages contain a
marker gets that marker's reply (tests/support/upstream_stub.py speaks OpenAI's
real chat-completions SSE format); usage says completion_tokens = pieces.

With `--count-requests` after the spec, it keeps every request and answers each
line on its stdin, a string, with how many requests so far carried it in their
messages (benchmarks/answer_cache.py counts the upstream calls a cache saves).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading

import uvloop
from tests.support.upstream_stub import Reply, UpstreamStub


def main() -> None:
    spec = json.loads(sys.argv[1])
    counting = "--count-requests" in sys.argv[2:]
    # The stub makes its own loop with asyncio.new_event_loop(): make that uvloop,
    # so the stub costs the shared core as little as possible.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    stub = UpstreamStub()
    stub.record = counting  # off, a long run would keep every request
    for marker, script in spec.items():
        pieces = list(script["pieces"])
        stub.reply(
            marker,
            Reply(
                pieces=pieces,
                first_delay=float(script["first_delay"]),
                piece_delay=float(script["piece_delay"]),
                usage={
                    "prompt_tokens": 20,
                    "completion_tokens": len(pieces),
                    "total_tokens": 20 + len(pieces),
                },
            ),
        )
    stub.start()
    print(stub.port, flush=True)
    if counting:
        for line in sys.stdin:
            print(len(stub.exchanges_for(line.strip())), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
