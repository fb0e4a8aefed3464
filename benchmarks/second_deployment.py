"""Issue 20, item 7: does a second `serve` with QA_WORKERS=2 join a running group's port?

    uv run --frozen python -m benchmarks.second_deployment [--requests 40]

Starts deployment A (QA_WORKERS=2) and waits until both its workers listen,
then starts deployment B with the same QA_PORT and QA_WORKERS=2, and a
different QA_MAX_QUERY_CHARS, which `/readyz` reports: so each answer says
which deployment gave it. Then `--requests` fresh connections ask `/readyz`.

Before the fix, B started and the kernel gave it a share of the connections;
after, B exits at once with "address in use" and A answers every request.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
from tests.support.redis_server import run_redis
from tests.support.service import run_service, service_env

A_CHARS, B_CHARS = 4000, 3999
# B's workers import LangChain before they listen; on a busy machine, seconds.
B_START_SECONDS = 60


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args(argv)
    with TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        redis = stack.enter_context(run_redis(workdir))
        common = {"QA_PROVIDER": "demo", "QA_WORKERS": "2", "QA_REDIS_URL": redis.url}
        a = stack.enter_context(
            run_service({**common, "QA_MAX_QUERY_CHARS": str(A_CHARS)}, workdir)
        )
        port = a.url.rsplit(":", 1)[1]
        b_env = service_env({**common, "QA_MAX_QUERY_CHARS": str(B_CHARS), "QA_PORT": port})
        b = subprocess.Popen(
            [sys.executable, "-m", "qa_service", "serve"],
            env=b_env,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            b_listening = _wait_for_b(a.url, b)
            answers: Counter[str] = Counter()
            for _ in range(args.requests):
                # A new connection each time: the kernel picks a socket per connection.
                chars = httpx.get(f"{a.url}/readyz", timeout=10).json()["max_query_chars"]
                answers["A" if chars == A_CHARS else "B"] += 1
        finally:
            if b.poll() is None:
                b.terminate()
            out, _ = b.communicate(timeout=30)
    print(f"deployment B {'started' if b_listening else 'exited'} (exit code {b.returncode})")
    if not b_listening:
        print("its output:\n  " + "\n  ".join(out.decode(errors="replace").splitlines()))
    print(f"{args.requests} requests: A answered {answers['A']}, B answered {answers['B']}")


def _wait_for_b(url: str, b: subprocess.Popen[bytes]) -> bool:
    """True once B answers a request on the port; False once B has exited."""
    deadline = time.monotonic() + B_START_SECONDS
    while time.monotonic() < deadline:
        if b.poll() is not None:
            return False
        if httpx.get(f"{url}/readyz", timeout=10).json()["max_query_chars"] == B_CHARS:
            return True
        time.sleep(0.1)
    sys.exit(f"B neither answered nor exited within {B_START_SECONDS} s")


if __name__ == "__main__":
    main()
