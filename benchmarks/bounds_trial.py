"""The service's bounds on a misbehaving provider and idle clients, for any source tree.

    uv run python -m benchmarks.bounds_trial [SRC_DIR]

SRC_DIR (default: this checkout's src/) is put first on the service's
PYTHONPATH, so an older tree (a `git worktree` of an earlier commit) can be
compared with this one on the same machine, against the same loopback stub.
Each line is one probe: a stall, a long Retry-After, a cross-origin-style
text/plain POST, a provider ignoring the output cap, and silent connections.
"""

import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tests.support.providers import marker, provider_settings
from tests.support.service import run_service
from tests.support.sse import read_stream
from tests.support.upstream_stub import Reply, UpstreamStub


def main() -> None:
    SRC = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1] / "src")
    stub = UpstreamStub()
    stub.start()
    work = Path(tempfile.mkdtemp())
    out = {}
    for provider in ("openai", "groq"):
        base = {
            **provider_settings(provider, stub),
            "PYTHONPATH": SRC,
            "QA_UPSTREAM_READ_TIMEOUT_SECONDS": "2",
            "QA_UPSTREAM_MAX_RETRIES": "2",
            "QA_MAX_TOKENS": "50",
            "QA_SEND_TIMEOUT_SECONDS": "1",
            "QA_REQUEST_HEADER_TIMEOUT_SECONDS": "1",
        }
        with run_service(base, work) as svc:
            # 1. stall after one piece, read timeout 2 s: what ends the stream, and when (15 s cap)
            key = marker()
            stub.reply(key, Reply(pieces=["a ", "b "], stall_after_pieces=1))
            t = time.monotonic()
            try:
                s = read_stream(svc.url, params={"query": key}, timeout=15)
                out[f"{provider} stall: end"] = [s.last, round(s.arrived[-1] - t, 2)]
            except AssertionError:
                out[f"{provider} stall: end"] = "no terminal event within 15 s"
            # 4. 429 with retry-after 300: upstream requests made
            key = marker()
            stub.reply(key, Reply(status=429, headers={"retry-after": "300"}))
            t = time.monotonic()
            s = read_stream(svc.url, params={"query": key})
            out[f"{provider} 429 ra=300: requests, seconds"] = [
                len(stub.exchanges_for(key)),
                round(time.monotonic() - t, 2),
            ]
            # 6. text/plain POST
            key = marker()
            r = httpx.post(
                f"{svc.url}/ai_write",
                content=json.dumps({"query": key}),
                headers={"content-type": "text/plain"},
            )
            time.sleep(0.3)
            out[f"{provider} text/plain POST: status, upstream calls"] = [
                r.status_code,
                len(stub.exchanges_for(key)),
            ]
            # 7. provider ignoring max_tokens=50 with 3000 pieces
            key = marker()
            stub.reply(key, Reply(pieces=[f"t{n} " for n in range(3000)]))
            s = read_stream(svc.url, params={"query": key})
            out[f"{provider} cap 50, provider sends 3000: texts relayed"] = s.kinds.count("text")
            # 8. 100 silent connections: how many still open after 5 s
            port = int(svc.url.rsplit(":", 1)[1])
            conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
            time.sleep(5)
            still = 0
            for c in conns:
                c.setblocking(False)
                try:
                    still += c.recv(1) != b""
                except BlockingIOError:
                    still += 1
                except ConnectionResetError:
                    pass
                c.close()
            out[f"{provider} 100 silent connections: open after 5 s"] = still
    for k, v in out.items():
        print(k, "=>", v)
    stub.stop()


if __name__ == "__main__":
    main()
