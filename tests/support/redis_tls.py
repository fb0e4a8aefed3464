"""redis-server speaking only TLS, for tests, with a throwaway CA made by openssl.

Its certificate is for IP 127.0.0.1, signed by a CA made for this one server
in its own directory; `.url` carries the CA's path as redis-py's `ssl_ca_certs`,
as an operator's QA_REDIS_URL would.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, require_redis_server


@dataclass
class TlsRedisServer(RedisServer):
    """redis-server on a TLS port only (`--port 0`), with a certificate from its own CA."""

    ca_path: Path = Path()

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.ca_path))}"

    def command(self) -> list[str]:
        plain = super().command()
        at = plain.index("--port")
        return [
            *plain[:at],
            "--port", "0",
            "--tls-port", str(self.port),
            *plain[at + 2 :],
            "--tls-cert-file", str(self.workdir / "server.crt"),
            "--tls-key-file", str(self.workdir / "server.key"),
            "--tls-ca-cert-file", str(self.ca_path),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def client_for(self, key: str) -> redis.Redis:
        return self.client()

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.ca_path),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def make_certificates(directory: Path) -> Path:
    """A throwaway CA and a server certificate for IP 127.0.0.1 it signed; returns the CA's path."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=qa-service test CA", cwd=directory)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
             cwd=directory)  # fmt: skip
    return directory / "ca.crt"


@contextmanager
def run_tls_redis(workdir: Path, timeout: float = 10.0) -> Iterator[TlsRedisServer]:
    """redis-server speaking only TLS, its certificate signed by a CA made for it."""
    require_redis_server()
    directory = workdir / f"redis-tls-{time.monotonic_ns()}"
    directory.mkdir(parents=True)
    server = TlsRedisServer(free_port(), directory, ca_path=make_certificates(directory))
    server.start(timeout)
    try:
        yield server
    finally:
        server.stop()
