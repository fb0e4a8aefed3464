"""The provider connection pool: warmed at start-up, bounded, reused over TLS, and a full
pool ends an answer clearly instead of hanging it.

Against tests/support/tls_upstream.py, which keeps connections alive and
counts them, as a provider's edge would; the service trusts its CA through
SSL_CERT_FILE.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.providers import FAST, OPENAI_KEY, marker
from tests.support.service import run_service
from tests.support.sse import read_stream
from tests.support.tls_upstream import RunningTlsUpstream, TlsFiles
from tests.support.upstream_stub import Reply

BOUND = 4
BURST = 24


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


def test_a_burst_over_tls_reuses_connections_within_the_bound(
    tls_upstream: RunningTlsUpstream, workdir: Path
) -> None:
    key = marker()
    pieces = ["over ", "TLS ", "and ", "back"]
    tls_upstream.app.replies[key] = Reply(pieces=pieces, piece_delay=0.02)
    settings = _settings(
        tls_upstream,
        QA_UPSTREAM_MAX_CONNECTIONS=str(BOUND),
        # Generous: the burst queues for the pool by design, on a busy machine.
        QA_UPSTREAM_POOL_TIMEOUT_SECONDS="60",
    )
    before = tls_upstream.connection_counts()
    with run_service(settings, workdir) as service:
        with ThreadPoolExecutor(BURST) as pool:
            streams = list(
                pool.map(
                    lambda _: read_stream(service.url, params={"query": key}, timeout=60),
                    range(BURST),
                )
            )
        after = tls_upstream.connection_counts()

    assert [s.kinds[-1] for s in streams] == ["done"] * BURST
    assert all(s.text == "".join(pieces) for s in streams)
    assert after["requests"] - before["requests"] >= BURST
    # The warm-up's connection included: never more than the bound.
    assert after["http_versions"] == ["https/1.1"]
    opened = after["connections"]["https"] - before["connections"]["https"]
    assert 1 <= opened <= BOUND


def test_an_answer_that_finds_every_connection_in_use_ends_over_capacity(
    tls_upstream: RunningTlsUpstream, workdir: Path
) -> None:
    holding, waiting = marker(), marker()
    tls_upstream.app.replies[holding] = Reply(pieces=["held ", "never "], stall_after_pieces=1)
    tls_upstream.app.replies[waiting] = Reply(pieces=["never "])
    settings = _settings(
        tls_upstream,
        QA_UPSTREAM_MAX_CONNECTIONS="1",
        QA_UPSTREAM_POOL_TIMEOUT_SECONDS="0.5",
    )
    # The pool outside: the service stops first, which ends the held stream.
    with ThreadPoolExecutor(1) as pool, run_service(settings, workdir) as service:
        open_before = tls_upstream.app.open_streams
        pool.submit(read_stream, service.url, params={"query": holding}, timeout=15)
        _wait_until(
            lambda: tls_upstream.app.open_streams > open_before, "the first answer never started"
        )

        refused = read_stream(service.url, params={"query": waiting}, timeout=15)
    # The stream had started (no first-text hold here): a clear error event,
    # never a hang, and never the provider's fault.
    assert refused.status == 200
    assert refused.kinds == ["meta", "error"]
    assert refused.last["error"]["code"] == "over_capacity"
    assert refused.last["error"]["retryable"] is True
    assert refused.last["error"]["retry_after_seconds"] == 1


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
