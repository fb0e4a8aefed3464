"""The provider connection pool: warmed at start-up, bounded, reused over TLS, and answers
past its bound refused at once instead of queued for it.

Against tests/support/tls_upstream.py, which keeps connections alive and
counts them, as a provider's edge would; the service trusts its CA through
SSL_CERT_FILE.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.providers import FAST, OPENAI_KEY, marker
from tests.support.service import run_service
from tests.support.sse import read_stream
from tests.support.tls_upstream import RunningTlsUpstream, TlsFiles
from tests.support.upstream_stub import Reply

BOUND = 4
WAVES = 6


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTlsUpstream]:
    upstream = RunningTlsUpstream(TlsFiles(tmp_path_factory.mktemp("tls")))
    upstream.start()
    yield upstream
    upstream.stop()


def _settings(upstream: RunningTlsUpstream, **extra: str) -> dict[str, str]:
    return {
        **FAST,
        "QA_PROVIDER": "openai",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": f"{upstream.https_url}/v1",
        "SSL_CERT_FILE": str(upstream.files.ca_file),
        **extra,
    }


def _wait_until(condition: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_waves_of_answers_over_tls_reuse_connections_within_the_bound(
    tls_upstream: RunningTlsUpstream, workdir: Path
) -> None:
    key = marker()
    pieces = ["over ", "TLS ", "and ", "back"]
    tls_upstream.app.replies[key] = Reply(pieces=pieces, piece_delay=0.02)
    settings = _settings(tls_upstream, QA_UPSTREAM_MAX_CONNECTIONS=str(BOUND))
    before = tls_upstream.connection_counts()
    with run_service(settings, workdir) as service, ThreadPoolExecutor(BOUND) as pool:
        # As many at once as the bound admits, wave after wave.
        streams = [
            stream
            for _ in range(WAVES)
            for stream in pool.map(
                lambda _: read_stream(service.url, params={"query": key}, timeout=60),
                range(BOUND),
            )
        ]
        after = tls_upstream.connection_counts()

    assert [s.kinds[-1] for s in streams] == ["done"] * (WAVES * BOUND)
    assert all(s.text == "".join(pieces) for s in streams)
    assert after["requests"] - before["requests"] >= WAVES * BOUND
    # The warm-up's connection included: never more than the bound, however
    # many waves: each reuses the last one's connections.
    assert after["http_versions"] == ["https/1.1"]
    opened = after["connections"]["https"] - before["connections"]["https"]
    assert 1 <= opened <= BOUND


def test_an_answer_past_the_pools_bound_is_refused_at_once_with_no_provider_call(
    tls_upstream: RunningTlsUpstream, workdir: Path
) -> None:
    # Admitted, it would wait for a connection through the SDK's retries (and a
    # fallback's) only to end over_capacity: the bound caps admission instead.
    holding, waiting = marker(), marker()
    tls_upstream.app.replies[holding] = Reply(pieces=["held ", "never "], stall_after_pieces=1)
    tls_upstream.app.replies[waiting] = Reply(pieces=["never "])
    settings = _settings(tls_upstream, QA_UPSTREAM_MAX_CONNECTIONS="1")
    # The pool outside: the service stops first, which ends the held stream.
    with ThreadPoolExecutor(1) as pool, run_service(settings, workdir) as service:
        open_before = tls_upstream.app.open_streams
        pool.submit(read_stream, service.url, params={"query": holding}, timeout=15)
        _wait_until(
            lambda: tls_upstream.app.open_streams > open_before, "the first answer never started"
        )
        requests_before = tls_upstream.connection_counts()["requests"]
        refused = httpx.get(f"{service.url}/ai_write", params={"query": waiting}, timeout=15)
        requests_after = tls_upstream.connection_counts()["requests"]

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "over_capacity"
    assert requests_after == requests_before


def test_the_first_answer_after_a_start_takes_the_connection_warmed_for_it(
    tls_upstream: RunningTlsUpstream, workdir: Path
) -> None:
    key = marker()
    tls_upstream.app.replies[key] = Reply(pieces=["warm"])

    def opened() -> int:
        return int(tls_upstream.connection_counts()["connections"]["https"])

    before = opened()
    with run_service(_settings(tls_upstream), workdir) as service:
        _wait_until(lambda: opened() > before, "no connection was warmed at start-up")
        warmed = opened()
        stream = read_stream(service.url, params={"query": key})
        answered = opened()

    assert stream.text == "warm"
    assert warmed - before == 1
    assert answered == warmed  # no handshake of its own
