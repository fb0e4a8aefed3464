"""QA_REDIS_URL's forms, read into what to connect to: one Redis, Sentinel, or a cluster.

The forms are the `limits` library's (and so its docs'):
    redis://[[user]:password@]host[:port][/db]       rediss://... (TLS)   unix:///path.sock
    redis+sentinel://[password@]host:port[,host:port...]/<service name>[/<db>]
    redis+cluster://[password@]host:port[,host:port...]
A `user:password@` works in all of them; a lone `password@` in the last two is
a password, as `limits` and Sentinel's own `requirepass` spell it. TLS options
are redis-py's query parameters on rediss:// (`?ssl_ca_certs=/path/ca.crt`).

Nothing here imports redis, and no message carries the URL's password: each
names what is wrong, never the value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from qa_service.config import REDIS_URL_SCHEMES as SCHEMES

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
SINGLE_SCHEMES = ("redis", "rediss", "unix")

# redis-py's TLS options (redis.asyncio.connection.SSLConnection), passed on as
# its from_url passes them. Files among them must exist: a typo would otherwise
# surface as a TLS handshake error on the first connection.
TLS_FILES = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")
TLS_OPTIONS = (*TLS_FILES, "ssl_cert_reqs", "ssl_check_hostname")
_SENTINEL_PORT = 26379
_REDIS_PORT = 6379


class RedisUrlError(ValueError):
    """QA_REDIS_URL cannot be used; the message names the fault, not the value."""


@dataclass(frozen=True, slots=True)
class SingleRedis:
    """One Redis server (redis://, rediss://, unix://), as redis-py's from_url reads it."""

    url: str


@dataclass(frozen=True, slots=True)
class SentinelRedis:
    """The primary that Sentinel names for `service`, followed through failovers."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterRedis:
    """A Redis Cluster, found through any of `nodes` (it tells us the rest)."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


RedisTarget = SingleRedis | SentinelRedis | ClusterRedis


def parse_redis_url(url: str) -> RedisTarget:
    """What `url` points at; RedisUrlError if it cannot be used."""
    url = url.strip()
    scheme, _, rest = url.partition("://")
    if not rest or scheme not in SCHEMES:
        raise RedisUrlError("must be a " + ", ".join(f"{s}://" for s in SCHEMES) + " URL")
    if scheme in SINGLE_SCHEMES:
        return _single(url, scheme)
    netloc, _, path = rest.partition("/")
    path, _, query = path.partition("?")
    if query:
        raise RedisUrlError(f"{scheme}:// takes no query parameters")
    username, password, hosts = _auth_and_hosts(netloc)
    default_port = _SENTINEL_PORT if scheme == SENTINEL_SCHEME else _REDIS_PORT
    addresses = tuple(_address(host, default_port) for host in hosts)
    parts = [unquote(p) for p in path.split("/") if p]
    if scheme == CLUSTER_SCHEME:
        if parts not in ([], ["0"]):
            raise RedisUrlError("a cluster has only database 0: redis+cluster://host:port,...")
        return ClusterRedis(addresses, username, password)
    if not parts or len(parts) > 2:
        raise RedisUrlError("needs the service name: redis+sentinel://host:port/<service>[/<db>]")
    return SentinelRedis(addresses, parts[0], _db(parts[1:]), username, password)


def describe_redis_url(url: str) -> str:
    """Where a Redis URL points, without its password: for messages and logs."""
    try:
        target = parse_redis_url(url)
    except RedisUrlError:
        return "an unusable URL"
    if isinstance(target, SingleRedis):
        parts = urlsplit(target.url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        return f"{parts.scheme}://{parts.hostname}:{parts.port or _REDIS_PORT}{parts.path or ''}"
    if isinstance(target, SentinelRedis):
        return f"{SENTINEL_SCHEME}://{_hosts(target.sentinels)}/{target.service}/{target.db}"
    return f"{CLUSTER_SCHEME}://{_hosts(target.nodes)}"


def _single(url: str, scheme: str) -> SingleRedis:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RedisUrlError("has a port that is not a number from 0 to 65535") from None
    if scheme == "unix":
        if not parts.path:
            raise RedisUrlError("needs the socket's path: unix:///path/to/redis.sock")
    elif not parts.hostname:
        raise RedisUrlError(f"needs a host: {scheme}://host:port/db")
    elif port == 0:
        raise RedisUrlError("has port 0")
    elif parts.path.strip("/"):
        _db([parts.path.strip("/")])
    query = parse_qs(parts.query, keep_blank_values=True)
    allowed = ("db", *TLS_OPTIONS) if scheme == "rediss" else ("db",)
    for name, values in query.items():
        if name not in allowed:
            raise RedisUrlError(
                f"{scheme}:// takes no query parameter {name!r} (it takes: {', '.join(allowed)})"
            )
        if name == "db":
            _db(values[:1])
        if name in TLS_FILES and not os.path.exists(values[0]):
            raise RedisUrlError(f"{name}: no such file or directory")
    return SingleRedis(url)


def _auth_and_hosts(netloc: str) -> tuple[str | None, str | None, list[str]]:
    # The last "@": an unescaped one in a password still leaves the hosts whole.
    auth, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        name, colon, secret = auth.partition(":")
        if colon:
            username, password = unquote(name) or None, unquote(secret) or None
        else:
            password = unquote(name) or None
    listed = [h.strip() for h in hosts.split(",") if h.strip()]
    if not listed:
        raise RedisUrlError("needs at least one host:port")
    return username, password, listed


def _address(host: str, default_port: int) -> tuple[str, int]:
    try:
        parts = urlsplit(f"//{host}")
        port = parts.port
    except ValueError:
        raise RedisUrlError("has a port that is not a number from 0 to 65535") from None
    if not parts.hostname or port == 0:
        raise RedisUrlError("has a host:port without a host, or with port 0")
    return parts.hostname, port or default_port


def _db(parts: list[str]) -> int:
    if not parts:
        return 0
    if not parts[0].isdigit():
        raise RedisUrlError("has a database that is not a number")
    return int(parts[0])


def _hosts(addresses: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"{host}:{port}" for host, port in addresses)
