"""QA_REDIS_URL's forms (stores/redis_urls.py): what each points at, and faults named
without the password. Reaching Redis on each is tests/integration/test_redis_topologies.py."""

from __future__ import annotations

import pytest

from qa_service.config import Settings
from qa_service.stores.redis_urls import (
    ClusterRedis,
    RedisUrlError,
    SentinelRedis,
    SingleRedis,
    describe_redis_url,
    parse_redis_url,
)

SECRET = "pw-do-not-print-0123"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        f"redis://:{SECRET}@cache:6380/2",
        f"redis://user:{SECRET}@cache",
        "unix:///run/redis.sock?db=1",
        f"rediss://:{SECRET}@cache:6380/0?ssl_cert_reqs=required&ssl_check_hostname=false",
    ],
)
def test_one_server_is_handed_to_redis_py_as_written(url: str) -> None:
    assert parse_redis_url(url) == SingleRedis(url)


def test_a_sentinel_url_names_its_sentinels_service_db_and_password() -> None:
    target = parse_redis_url(f"redis+sentinel://{SECRET}@s1:26380, s2/qa-primary/3")
    assert target == SentinelRedis((("s1", 26380), ("s2", 26379)), "qa-primary", 3, None, SECRET)


def test_a_sentinel_url_takes_a_user_and_an_escaped_password() -> None:
    target = parse_redis_url("redis+sentinel://app:p%40ss@s1:26379/qa")
    assert target == SentinelRedis((("s1", 26379),), "qa", 0, "app", "p@ss")


def test_a_cluster_url_lists_its_startup_nodes() -> None:
    target = parse_redis_url(f"redis+cluster://:{SECRET}@n1:7000,n2:7001,[::1]:7002")
    assert target == ClusterRedis((("n1", 7000), ("n2", 7001), ("::1", 7002)), None, SECRET)


@pytest.mark.parametrize(
    ("url", "fault"),
    [
        (f"http://:{SECRET}@h", "must be a redis://"),
        (f"redis+sentinel://{SECRET}@s1:26379", "service name"),
        (f"redis+sentinel://{SECRET}@s1:26379/qa/1/2", "service name"),
        (f"redis+sentinel://{SECRET}@s1:26379/qa?ssl=true", "no query parameters"),
        (f"redis+cluster://{SECRET}@n1:0", "port 0"),
        (f"redis+cluster://{SECRET}@n1:99999", "port that is not a number"),
        (f"redis://:{SECRET}@h/x", "database that is not a number"),
        (f"redis://:{SECRET}@h/0?socket_timeout=1", "'socket_timeout'"),
        (f"redis://:{SECRET}@h/0?ssl_ca_certs=/etc/hostname", "'ssl_ca_certs'"),
        (f"rediss://:{SECRET}@h/0?ssl_certfile=/nonexistent", "ssl_certfile: no such file"),
        ("unix://", "must be a"),
    ],
)
def test_a_url_that_cannot_be_used_is_refused_naming_the_fault_not_the_password(
    url: str, fault: str
) -> None:
    with pytest.raises(RedisUrlError) as refused:
        parse_redis_url(url)
    assert fault in str(refused.value)
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "described"),
    [
        (f"rediss://:{SECRET}@cache:6380/0?ssl_ca_certs=/etc/hostname", "rediss://cache:6380/0"),
        (f"redis+sentinel://{SECRET}@s1:26379,s2:1/qa", "redis+sentinel://s1:26379,s2:1/qa/0"),
        (f"redis+cluster://u:{SECRET}@n1:7000", "redis+cluster://n1:7000"),
        (f"redis+cluster://u:{SECRET}@n1:x", "an unusable URL"),
    ],
)
def test_a_url_is_described_without_its_password(url: str, described: str) -> None:
    assert describe_redis_url(url) == described


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://{SECRET}@s1:26379/qa",
        f"redis+cluster://:{SECRET}@n1:7000",
        f"redis://user:{SECRET}@cache:6379/0",
    ],
)
def test_the_password_of_every_form_is_a_secret_the_logs_redact(url: str) -> None:
    settings = Settings(_env_file=None, redis_url=url)  # type: ignore[call-arg]
    assert SECRET in settings.secret_values()
