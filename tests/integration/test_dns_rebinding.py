"""DNS rebinding, against the real service: a page whose name its owner re-points at
127.0.0.1 is refused by its `Host`, while loopback clients, proxies that pass a
loopback `Host` on, and probes by IP address still get through.

The rebound page is, to the browser, its own origin: it sends `Host` and
`Origin` of its own name and `Sec-Fetch-Site: same-origin`, which is exactly
what the requests below send.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.test_ai_sdk_chat import chat_body
from tests.support.providers import CANCEL_ON_HANGUP, marker, provider_settings
from tests.support.service import RunningService, SharedServices
from tests.support.sse import read_stream
from tests.support.upstream_stub import UpstreamStub


def rebound(service: RunningService, name: str = "rebind.attacker.example") -> dict[str, str]:
    """The headers of a same-origin fetch from a page at `name`, rebound to the service."""
    host = f"{name}:{urlsplit(service.url).port}"
    return {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}


def start_three_ways(
    service: RunningService, headers: dict[str, str], questions: list[str] | None = None
) -> list[httpx.Response]:
    """GET and POST /ai_write, and POST /v1/chat/completions, each with a new question
    (appended to `questions`)."""
    url, asked = service.url, [marker() for _ in range(3)]
    if questions is not None:
        questions += asked
    return [
        httpx.get(f"{url}/ai_write", params={"query": asked[0]}, headers=headers, timeout=10),
        httpx.post(f"{url}/ai_write", json={"query": asked[1]}, headers=headers, timeout=10),
        httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "explain", "messages": [{"role": "user", "content": asked[2]}]},
            headers=headers,
            timeout=10,
        ),
    ]


def test_a_rebound_page_can_neither_start_nor_read_an_answer(
    openai_service: RunningService, stub: UpstreamStub
) -> None:
    headers = rebound(openai_service)
    questions: list[str] = []
    started = start_three_ways(openai_service, headers, questions)

    assert [r.status_code for r in started] == [421, 421, 421]
    native, openai_shaped = started[0].json(), started[2].json()
    assert native["error"]["code"] == "host_not_allowed"
    assert native["error"]["retryable"] is False
    assert "QA_ALLOWED_HOSTS" in native["error"]["message"]
    # /v1 speaks OpenAI's error shape, which its SDKs parse.
    assert openai_shaped["error"]["code"] == "host_not_allowed"
    assert openai_shaped["error"]["type"] == "invalid_request_error"

    # Nor can it read an answer or the service's state, were it to learn an id.
    own = read_stream(openai_service.url, params={"query": marker()})
    answer_id = own.events[0]["meta"]["answer_id"]
    questions.append(marker())
    chat = httpx.post(
        f"{openai_service.url}/api/chat", json=chat_body(questions[-1]), headers=headers, timeout=10
    )
    for response in (
        chat,
        httpx.get(f"{openai_service.url}/answers/{answer_id}/events", headers=headers),
        httpx.get(f"{openai_service.url}/metrics", headers=headers),
        httpx.get(f"{openai_service.url}/", headers=headers),
    ):
        assert response.status_code == 421, response.request.url
        assert response.json()["error"]["code"] == "host_not_allowed"
    assert [stub.exchanges_for(question) for question in questions] == [[]] * 4


@pytest.mark.parametrize(
    "name", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST"], ids=lambda name: name
)
def test_loopback_names_on_any_port_may_start_answers(
    openai_service: RunningService, name: str
) -> None:
    # A local proxy in front passes the browser's Host, with its own port, on.
    for port in (urlsplit(openai_service.url).port, 8443):
        host = f"{name}:{port}"
        headers = {"Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
        assert [r.status_code for r in start_three_ways(openai_service, headers)] == [200] * 3


@pytest.mark.parametrize("host", ["10.42.0.17:8000", "10.42.0.17", "[fd00::17]:8000"])
def test_probes_by_the_pods_address_are_answered(openai_service: RunningService, host: str) -> None:
    """Kubernetes' httpGet probes send the pod's IP as Host; an IP cannot be rebound."""
    for path in ("/healthz", "/readyz"):
        response = httpx.get(f"{openai_service.url}{path}", headers={"Host": host}, timeout=10)
        assert response.status_code == 200, (path, response.text)


@pytest.fixture
def named_service(stub: UpstreamStub, shared_services: SharedServices) -> RunningService:
    settings = {
        **provider_settings("openai", stub),
        **CANCEL_ON_HANGUP,
        "QA_ALLOWED_HOSTS": "qa.example.com, *.apps.example.net",
    }
    return shared_services.one(settings)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("qa.example.com", 200),
        ("QA.Example.com.", 200),  # case and a final dot do not make another name
        ("team.apps.example.net", 200),
        ("apps.example.net", 421),  # *.domain: its subdomains, not itself
        ("qa.example.com.attacker.example", 421),
        ("127.0.0.1", 200),  # addresses and localhost stay allowed
    ],
)
def test_qa_allowed_hosts_names_the_public_names_a_proxy_serves(
    named_service: RunningService, name: str, status: int
) -> None:
    headers = rebound(named_service, name)
    assert [r.status_code for r in start_three_ways(named_service, headers)] == [status] * 3
