"""The Redis topologies' test parts work (tests/support/redis_topologies.py, redis_tls.py): a
Sentinel failover, a cluster primary replaced by its replica, commands counted on
every node, and a TLS server that verifies as its CA says. Failover tests rely on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_tls import TlsRedisServer
from tests.support.redis_topologies import RedisCluster, run_redis_cluster, run_sentinel_set

pytestmark = pytest.mark.replicas


def test_killing_the_sentinel_primary_promotes_its_replica(tmp_path: Path) -> None:
    with run_sentinel_set(tmp_path) as servers:
        with servers.client_for("k") as client:
            client.set("k", "before")
            # Replication is asynchronous: the replica has it before the kill.
            assert client.wait(1, 10_000) == 1
        killed = servers.kill_primary()
        promoted = servers.wait_for_new_primary(killed)

        assert killed is servers.primary
        assert killed.process is not None
        assert killed.process.returncode == -9
        assert promoted is servers.replica
        with servers.client_for("k") as client:
            assert client.get("k") == b"before"  # replicated before the kill
            client.set("k", "after")  # and the new primary takes writes


def test_killing_a_cluster_primary_hands_its_slots_to_its_replica(tmp_path: Path) -> None:
    key = "qa:answer:{parts}:events"
    with run_redis_cluster(tmp_path) as cluster:
        with cluster.client_for(key) as client:
            client.set(key, "before")
            assert client.wait(1, 10_000) == 1
        killed = cluster.kill_primary_for(key)
        owner = cluster.wait_for_slot_owner_change(key, killed)

        assert owner is not killed
        assert owner is cluster.primary_for(key)
        with cluster.client_for(key) as client:
            assert client.get(key) == b"before"
            client.set(key, "after")


def test_cluster_command_stats_sum_every_node(redis_cluster: RedisCluster) -> None:
    keys = [f"qa:stats:{{{n}}}" for n in range(30)]  # in every primary's slots
    before = redis_cluster.command_stats()
    for key in keys:
        with redis_cluster.client_for(key) as client:
            client.set(key, "x" * 100)
    used = redis_cluster.command_stats() - before

    assert used.calls["set"] == len(keys)
    assert used.input_bytes > 100 * len(keys)
    assert len({redis_cluster.primary_for(key).port for key in keys}) == 3


def test_the_tls_server_speaks_only_tls_verified_by_its_own_ca(tls_redis: TlsRedisServer) -> None:
    with tls_redis.client() as client:
        assert client.ping()
    once: dict[str, Any] = {
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
        "retry": Retry(NoBackoff(), 0),
    }
    # Plain TCP on its port gets no answer it can read.
    with (
        redis.Redis(host="127.0.0.1", port=tls_redis.port, **once) as plain,
        pytest.raises(redis.exceptions.ConnectionError),
    ):
        plain.ping()
    # TLS without its CA: the certificate is not trusted.
    with (
        redis.Redis(
            host="127.0.0.1",
            port=tls_redis.port,
            ssl=True,
            socket_timeout=2,
            socket_connect_timeout=2,
        ) as untrusting,
        pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"),
    ):
        untrusting.ping()
    assert "ssl_ca_certs=" in tls_redis.url
