"""`qa-service ask` as a user runs it: a real subprocess against the real service."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.providers import marker
from tests.support.service import RunningService, service_env
from tests.support.upstream_stub import Reply, UpstreamStub

ASK = [sys.executable, "-m", "qa_service", "ask"]


def _port(service: RunningService) -> str:
    return service.url.rsplit(":", 1)[1]


def _ask(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ASK, *args],
        env=env if env is not None else service_env({}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_stdout_is_the_answer_and_stderr_ends_with_a_summary(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    pieces = ["Tides ", "follow\n", "the ", "moon."]
    stub.reply(key, Reply(pieces=pieces))

    result = _ask("--url", openai_service.url, key)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(pieces) + "\n"
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("done: first text after ")
    assert "4 tokens out, 21 in" in summary
    assert "finish_reason stop" in summary
    assert "request " in summary


@pytest.mark.parametrize("suffix", ["", "/", "//"])
def test_url_works_with_or_without_a_trailing_slash(
    openai_service: RunningService, stub: UpstreamStub, suffix: str
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["ok"]))

    result = _ask("--url", openai_service.url + suffix, key)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_without_url_it_finds_the_service_from_qa_port_and_qa_host(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["from env"]))
    # 0.0.0.0 is where serve listens; ask connects to loopback instead.
    env = service_env({"QA_PORT": _port(openai_service), "QA_HOST": "0.0.0.0"})

    result = _ask(key, env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "from env\n"


def test_host_and_port_flags_work_as_they_do_for_serve(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["from flags"]))
    # QA_PORT points elsewhere; the flag wins, as with `serve --port`.
    env = service_env({"QA_PORT": str(free_port())})

    result = _ask("--host", "127.0.0.1", "--port", _port(openai_service), key, env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "from flags\n"
    both = _ask("--url", openai_service.url, "--port", "1", key)
    assert both.returncode == 2
    assert "not both" in both.stderr


def test_without_url_it_reads_the_same_dotenv_as_serve(
    openai_service: RunningService, stub: UpstreamStub, tmp_path: Path
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["from .env"]))
    (tmp_path / ".env").write_text(f"QA_PORT={_port(openai_service)}\n")
    env = service_env({})
    env.pop("QA_PORT", None)

    result = _ask(key, env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "from .env\n"


def test_json_prints_every_event_as_one_json_line(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=["a\n", "b"]))

    result = _ask("--url", openai_service.url, "--json", key)

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [next(iter(e)) for e in events] == ["meta", "text", "text", "done"]
    assert [e["text"] for e in events[1:3]] == ["a\n", "b"]
    assert events[-1]["done"]["finish_reason"] == "stop"


def test_a_refusal_is_one_line_with_its_code_and_request_id(
    openai_service: RunningService,
) -> None:
    result = _ask("--url", openai_service.url, " ")

    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("qa-service: query_required: ")
    assert "(request " in line


def test_an_unreachable_service_is_one_line(tmp_path: Path) -> None:
    result = _ask("--url", f"http://127.0.0.1:{free_port()}", "tides")

    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "cannot reach" in line
    assert "ConnectError" in line


def test_ctrl_c_exits_130_with_one_line_and_the_upstream_request_closes(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    key = marker()
    stub.reply(key, Reply(pieces=[f"w{n} " for n in range(400)], piece_delay=0.05))
    process = subprocess.Popen(
        [*ASK, "--url", openai_service.url, key],
        env=service_env({}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A shell that runs the suite in the background ignores SIGINT, and the
        # child would inherit that; a user's terminal never does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while True:  # until the answer is streaming
            ready, _, _ = select.select([process.stdout], [], [], 0.1)
            if ready and os.read(process.stdout.fileno(), 4096):
                break
            assert time.monotonic() < deadline, "no text arrived"

        process.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 130
    assert stderr.decode().strip().splitlines() == [
        "qa-service: stopped (Ctrl-C); the service cancels the answer"
    ]
    exchange = stub.wait_closed(key)
    assert exchange.client_closed_at is not None
    assert exchange.client_closed_at - interrupted_at < 1.0
    assert not exchange.completed


LANGCHAIN_LOADED = (
    "import sys\n"
    "from qa_service.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('langchain')}),"
    " file=sys.stderr)\n"
)


@pytest.mark.parametrize("args", [["ask", "--help"], ["ask", "tides"]])
def test_ask_never_imports_langchain(service_url_env: dict[str, str], args: list[str]) -> None:
    # `ask --help` took 5 s when it imported LangChain; without it, well under 1 s.
    result = subprocess.run(
        [sys.executable, "-c", LANGCHAIN_LOADED, *args],
        env=service_url_env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.stderr.strip().splitlines()[-1] == "[]"


@pytest.fixture
def service_url_env(openai_service: RunningService) -> dict[str, str]:
    return service_env({"QA_PORT": _port(openai_service)})
