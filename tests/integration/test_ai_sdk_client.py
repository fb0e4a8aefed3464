"""The Vercel AI SDK's own client (the `ai` npm package: 5.0.92, 5, 6 and 7) against
/api/chat, under node's test runner (tests/js/ai-sdk/chat.mjs).

This side starts what the node tests talk to: the provider stub, scripted per
question, and two replicas sharing a real redis-server. Answers start on one
and resume on the other, so the chat index is shared as it must be. A third
service has the answer cache on: each client's question asked again is a hit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.integration.test_answers import HARD_PIECES
from tests.support.providers import marker, provider_settings
from tests.support.redis_server import run_redis
from tests.support.service import REPO, RunningService, run_services
from tests.support.upstream_stub import Reply, UpstreamStub

pytestmark = [pytest.mark.replicas, pytest.mark.slow]

JS_TESTS = REPO / "tests" / "js"
SLOW_PIECES = [f"w{n} " for n in range(40)]  # 2 s at 50 ms a piece


@pytest.fixture(scope="module")
def replicas(
    stub: UpstreamStub, workdir: Path
) -> Iterator[tuple[RunningService, RunningService, RunningService]]:
    """Two replicas sharing Redis, and a service with the answer cache on."""
    with ExitStack() as stack:
        redis = stack.enter_context(run_redis(workdir))
        settings = {**provider_settings("openai", stub), "QA_REDIS_URL": redis.url}
        cached = {**provider_settings("openai", stub), "QA_ANSWER_CACHE_TTL_SECONDS": "300"}
        a, b, c = stack.enter_context(run_services([settings, settings, cached], workdir))
        yield a, b, c


def _plan(
    stub: UpstreamStub, a: RunningService, b: RunningService, cached: RunningService
) -> dict[str, object]:
    """Questions the stub answers in scripted ways, and what the client must see."""
    exact, length, failing, slow, silent, kept = (marker() for _ in range(6))
    # Multi-byte characters arrive split: the stub writes 7 bytes at a time.
    stub.reply(exact, Reply(pieces=HARD_PIECES, write_slice_bytes=7))
    stub.reply(length, Reply(pieces=["cut ", "short"], finish_reason="length"))
    stub.reply(failing, Reply(pieces=["partial ", "text ", "lost"], cut_after_pieces=2))
    stub.reply(slow, Reply(pieces=SLOW_PIECES, piece_delay=0.05))
    # Keep-alives (every 0.2 s, provider_settings) while the model is silent.
    stub.reply(silent, Reply(pieces=["After ", "a pause."], first_delay=1.2))
    stub.reply(kept, Reply(pieces=HARD_PIECES, piece_delay=0.01))
    return {
        "url": a.url,
        "resumeUrl": b.url,
        "exact": {"question": exact, "text": "".join(HARD_PIECES)},
        "length": {"question": length, "text": "cut short"},
        "failing": {"question": failing},
        "slow": {"question": slow, "text": "".join(SLOW_PIECES)},
        "blank": {"question": " \n\t"},
        "silent": {"question": silent, "text": "After a pause."},
        "cached": {"url": cached.url, "question": kept, "text": "".join(HARD_PIECES)},
    }


def test_the_ai_sdk_clients_read_answers_errors_and_resumes(
    stub: UpstreamStub, replicas: tuple[RunningService, RunningService, RunningService]
) -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed (scripts/system-deps.sh installs it)"
    assert (JS_TESTS / "node_modules" / "ai7").is_dir(), "run: npm ci --prefix tests/js"
    plan = _plan(stub, *replicas)

    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", "tests/js/ai-sdk/chat.mjs"],
        cwd=REPO,
        env={"PATH": str(Path(node).parent), "QA_AI_SDK_PLAN": json.dumps(plan)},
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )

    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, output
    # Nine tests for each of the four clients ran, and passed.
    assert "\n# pass 36\n" in output, output
    assert "\n# fail 0\n" in output, output
