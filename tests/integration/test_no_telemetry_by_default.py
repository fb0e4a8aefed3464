"""Nothing is sent anywhere unless it is configured (issue 24, part 4).

The service runs with every proxy variable pointing at a recording proxy on
127.0.0.1 that lets nothing through (tests/support/recording_proxy.py), and
with NO_PROXY covering loopback, so its provider stub still answers. Any
client that honours those variables (httpx under the provider SDKs,
requests under LangSmith and the OpenTelemetry exporters) and wants to reach
a collector, LangSmith or anything else off the machine has to ask the
proxy first. An audit hook in the service (tests/support/outbound.py)
records every socket it connects through Python's socket module, so a client
that ignores the proxy variables, or one aimed at loopback (the OTLP
exporter's default, localhost:4318, is inside NO_PROXY), shows up too.

The second test turns LangSmith on and watches both methods see it try:
without it, the first test's silence would prove nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import wait_until
from tests.support.outbound import Attempt, audit_settings, read_attempts
from tests.support.providers import marker, provider_settings
from tests.support.recording_proxy import RecordingProxy, run_recording_proxy
from tests.support.service import RunningService, run_service, service_env
from tests.support.sse import read_stream
from tests.support.upstream_stub import OPENAI_PATH, UpstreamStub

# The families of variables that could make the service send telemetry.
TELEMETRY_PREFIXES = ("OTEL_", "LANGSMITH_", "LANGCHAIN_", "LANGFUSE_")
LANGSMITH_HOST = "api.smith.langchain.com"

# Each is a configuration that names telemetry without turning any of it on.
NOT_CONFIGURED: dict[str, dict[str, str]] = {
    "nothing": {},
    # Resource attributes alone: no endpoint and no exporter, so no export.
    "service name only": {
        "OTEL_SERVICE_NAME": "qa-service",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    },
    # The service reads the key, to scrub it from logs; tracing stays off without LANGSMITH_TRACING.
    "LangSmith key only": {"LANGSMITH_API_KEY": "lsv2_pt_fake_0123456789abcdef"},
}


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    with run_recording_proxy() as proxy:
        yield proxy


@pytest.mark.parametrize("telemetry", NOT_CONFIGURED.values(), ids=NOT_CONFIGURED.keys())
def test_nothing_is_sent_anywhere_unless_it_is_configured(
    telemetry: dict[str, str],
    stub: UpstreamStub,
    proxy: RecordingProxy,
    tmp_path: Path,
) -> None:
    audit = tmp_path / "outbound.jsonl"
    settings = {
        **provider_settings("openai", stub),
        **proxy.proxy_settings(),
        **audit_settings(audit),
        **telemetry,
    }
    _assert_only_these_telemetry_variables(settings, telemetry)
    with run_service(settings, tmp_path) as service:
        questions = _ask_in_every_dialect(service)
    # Read once the service has exited: exporters and LangSmith flush at exit.

    for question in questions:
        assert stub.exchanges_for(question, OPENAI_PATH), f"{question} never reached the stub"
    assert proxy.attempts() == []
    assert _off_the_stub(read_attempts(audit), stub) == []


def test_langsmith_configured_does_send_and_both_methods_see_it(
    stub: UpstreamStub, proxy: RecordingProxy, tmp_path: Path
) -> None:
    audit = tmp_path / "outbound.jsonl"
    settings = {
        **provider_settings("openai", stub),
        **proxy.proxy_settings(),
        **audit_settings(audit),
        # Its default endpoint, https://api.smith.langchain.com: through the proxy.
        "LANGSMITH_TRACING": "true",
        "LANGSMITH_API_KEY": "lsv2_pt_fake_0123456789abcdef",
    }
    with run_service(settings, tmp_path) as service:
        _ask_in_every_dialect(service)
        wait_until(proxy.attempts, 30, "LangSmith's upload reaching the proxy")
        # Stopped, LangSmith's exit flush retries the refused upload for longer than
        # run_service waits (10 s) before it kills: kill now, the attempt is recorded.
        service.process.kill()

    assert any(a.startswith(f"CONNECT {LANGSMITH_HOST}:443 ") for a in proxy.attempts())
    assert _connects(read_attempts(audit), proxy.port), "the audit hook missed the upload"


def _ask_in_every_dialect(service: RunningService) -> list[str]:
    """One answer each through the native, OpenAI chat and Responses dialects; their questions."""
    native, chat, responses = marker(), marker(), marker()
    stream = read_stream(service.url, params={"query": native})
    assert stream.kinds[-1] == "done", stream.events
    answered = httpx.post(
        f"{service.url}/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": chat}]},
        timeout=30,
    )
    assert answered.status_code == 200, answered.text
    answered = httpx.post(
        f"{service.url}/v1/responses", json={"model": "chat", "input": responses}, timeout=30
    )
    assert answered.status_code == 200, answered.text
    return [native, chat, responses]


def _assert_only_these_telemetry_variables(
    settings: Mapping[str, str], telemetry: Mapping[str, str]
) -> None:
    """The service's whole environment holds no telemetry variable but the case's own:
    run_service passes no shell variable through (service_env)."""
    env = service_env(settings)
    named = {name: value for name, value in env.items() if name.startswith(TELEMETRY_PREFIXES)}
    assert named == telemetry


def _off_the_stub(attempts: list[Attempt], stub: UpstreamStub) -> list[Attempt]:
    """The attempts that were not the provider call to the stub (nor its address lookup)."""
    allowed = {
        ("socket.connect", repr(("127.0.0.1", stub.port))),
        ("socket.getaddrinfo", repr(("127.0.0.1", stub.port))),
    }
    return [a for a in attempts if (a.event, a.target) not in allowed]


def _connects(attempts: list[Attempt], port: int) -> list[Attempt]:
    return [
        a for a in attempts if a.event == "socket.connect" and a.target == repr(("127.0.0.1", port))
    ]
