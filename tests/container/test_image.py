"""The Docker image, built and run with podman: exact answers, non-root, health, drain, metrics."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.deploy.test_helm_chart import helm_chart, render
from tests.integration.test_answers import HARD_PIECES
from tests.support.metrics import delta, read_metrics, settled_metrics, total
from tests.support.podman import Container, image_config, podman, run_container
from tests.support.ports import free_port
from tests.support.sse import hang_up_after, read_stream
from tests.support.upstream_stub import Reply, UpstreamStub

FAKE_KEY = f"sk-test-{uuid.uuid4().hex}"
GRACE = 2


def _openai_env(stub: UpstreamStub, **extra: str) -> dict[str, str]:
    return {
        "QA_PROVIDER": "openai",
        "OPENAI_API_KEY": FAKE_KEY,
        "OPENAI_BASE_URL": f"{stub.url}/v1",
        "QA_UPSTREAM_MAX_RETRIES": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def container(image_build_seconds: float, stub: UpstreamStub) -> Iterator[Container]:
    with run_container("qa-test-serve", free_port(), _openai_env(stub)) as running:
        yield running


def test_image_runs_as_non_root_and_declares_a_health_check(image_build_seconds: float) -> None:
    config = image_config()
    assert config["Config"]["User"] not in ("", "root", "0")
    assert config["Config"]["Cmd"] == ["qa-service", "serve"]
    health = config["Healthcheck"]["Test"]
    assert health[0] == "CMD"
    assert "/healthz" in " ".join(health)


def test_process_in_the_container_is_not_root(container: Container) -> None:
    assert container.exec("id", "-u").strip() != "0"
    # The server is PID 1 itself (exec-form CMD), so SIGTERM reaches it.
    assert "qa-service" in container.exec("cat", "/proc/1/cmdline")


def test_the_helm_chart_s_pre_stop_hook_and_user_fit_the_image(container: Container) -> None:
    # The chart holds a stopping pod with `exec: ["sleep", N]`, as its
    # runAsUser: the image must have `sleep` (coreutils), and that uid must be
    # the image's user. This container is hardened as the pod is (read-only
    # root, no capabilities).
    with helm_chart() as chart:
        objects = render(chart, {"shutdown": {"preStopSeconds": 1, "preStopAction": "exec"}})
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert container.exec("id", "-u").strip() == str(pod["securityContext"]["runAsUser"])
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command == ["sleep", "1"]
    result = podman("exec", container.name, *command, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_health_check_command_passes(container: Container) -> None:
    result = podman("healthcheck", "run", container.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_streams_an_exact_answer_from_the_stub_on_the_host(
    container: Container, stub: UpstreamStub
) -> None:
    key = f"c{uuid.uuid4().hex[:12]}"
    stub.reply(key, Reply(pieces=HARD_PIECES, write_slice_bytes=1))

    stream = read_stream(container.url, params={"query": key})

    assert stream.text == "".join(HARD_PIECES)
    assert stream.kinds[-1] == "done"
    assert stream.events[0]["meta"]["provider"] == "openai"


def _answer_record(container: Container, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The answer's log line, once the container has written it."""
    deadline = time.monotonic() + timeout
    while True:
        lines = container.logs().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        for record in records:
            if record.get("request_id") == request_id and record["message"] == "answer":
                return record
        assert time.monotonic() < deadline, f"no answer log line for {request_id}"
        time.sleep(0.1)


def test_logs_are_json_lines_without_query_or_key(container: Container, stub: UpstreamStub) -> None:
    key = f"c{uuid.uuid4().hex[:12]}"
    stub.reply(key, Reply(status=401, error_body={"error": {"message": "bad key {api_key}"}}))
    stream = read_stream(container.url, params={"query": key})
    request_id = stream.headers["x-request-id"]

    answer = _answer_record(container, request_id)
    assert answer["error_code"] == "upstream_auth_failed"
    assert answer["upstream_status"] == 401
    assert key not in container.logs()
    assert FAKE_KEY not in container.logs()


def test_metrics_move_after_answers_a_disconnect_and_an_upstream_error(
    container: Container, stub: UpstreamStub
) -> None:
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    before = settled_metrics(container.url)
    for _ in range(3):
        read_stream(container.url, params={"query": f"c{uuid.uuid4().hex[:12]}"})
    failing = f"c{uuid.uuid4().hex[:12]}"
    stub.reply(failing, Reply(status=500, error_body={"error": {"message": "boom"}}))
    read_stream(container.url, params={"query": failing})
    slow = f"c{uuid.uuid4().hex[:12]}"
    stub.reply(slow, Reply(pieces=[f"w{n} " for n in range(200)], piece_delay=0.05))
    hang_up_after(container.url, slow)

    # The hang-up cancels the answer once no reader has come back within the
    # resume grace (QA_RESUME_GRACE_SECONDS, 5 s in the image by default).
    deadline = time.monotonic() + 5 + 5
    while True:
        after = read_metrics(container.url)
        if (
            total(after, "qa_client_disconnects_total", **labels)
            > total(before, "qa_client_disconnects_total", **labels)
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.05)

    def grew(name: str, **extra: str) -> float:
        return delta(before, after, name, **labels, **extra)

    assert grew("qa_requests_total", outcome="complete") == 3
    assert grew("qa_upstream_errors_total", code="upstream_unavailable") == 1
    assert grew("qa_client_disconnects_total") == 1
    assert grew("qa_upstream_cancellations_total") == 1
    assert grew("qa_time_to_first_token_seconds_count") == 4
    assert grew("qa_tokens_relayed_total") > 12


def test_podman_stop_mid_answer_drains_within_the_grace_and_exits_0(
    image_build_seconds: float, stub: UpstreamStub
) -> None:
    key = f"c{uuid.uuid4().hex[:12]}"
    stub.reply(key, Reply(pieces=[f"w{n} " for n in range(400)], piece_delay=0.05))
    env = _openai_env(stub, QA_SHUTDOWN_GRACE_SECONDS=str(GRACE))
    events: list[dict[str, Any]] = []

    def read() -> None:
        with httpx.stream(
            "GET", f"{container.url}/ai_write", params={"query": key}, timeout=30
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))

    with run_container("qa-test-stop", free_port(), env) as container:
        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 10
        while not any("text" in event for event in events):
            assert reader.is_alive(), f"the reader died: {events}"
            assert time.monotonic() < deadline, f"no text: {events}"
            time.sleep(0.01)
        started = time.monotonic()
        podman("stop", "--time=10", container.name, timeout=30)
        stopped_after = time.monotonic() - started
        reader.join(5)
        state = container.state()

    # 0: it exited by itself, before podman's 10 s turned to SIGKILL (137).
    assert state["ExitCode"] == 0
    assert stopped_after < GRACE + 6
    assert events[-1]["error"]["code"] == "shutting_down"
    assert events[-1]["error"]["retryable"] is True
