"""Redis as operators run it, for tests: a Sentinel set and a six-node cluster
(and TLS, in redis_tls.py).

All of them are Debian's redis-server on free ports of 127.0.0.1, each process
in its own directory under the test's tmp_path, started by the test and
stopped by PID (RedisServer, redis_server.py). Every wait has a deadline; a
failover is awaited by polling what Sentinel or the cluster itself reports.
"""

from __future__ import annotations

import functools
import operator
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis

from tests.support.daemon import wait_until
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, RedisTraffic, require_redis_server
from tests.support.redis_tls import TlsRedisServer

SENTINEL_SERVICE = "qa-primary"
# Short, so a test's failover takes seconds: a primary is "down" after 1 s unanswered.
DOWN_AFTER_MS = 1000
CLUSTER_NODE_TIMEOUT_MS = 1000


def _new_server(workdir: Path, name: str, extra_args: tuple[str, ...] = ()) -> RedisServer:
    directory = workdir / f"{name}-{time.monotonic_ns()}"
    directory.mkdir(parents=True)
    return RedisServer(free_port(), directory, extra_args=extra_args)


# --- Sentinel ---------------------------------------------------------------


@dataclass
class SentinelServer(RedisServer):
    """redis-server in Sentinel mode, watching one primary (quorum 1)."""

    primary_port: int = 0

    def command(self) -> list[str]:
        # Sentinel rewrites its configuration file as it learns: it must be its own.
        config = self.workdir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.workdir}\n"
            f"logfile {self.log_path}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.primary_port} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
            f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
        )
        return ["redis-server", str(config), "--sentinel"]

    def primary_address(self) -> tuple[str, int] | None:
        with self.client(timeout=1.0) as client:
            address = client.sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
        if address is None:
            return None
        host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
        return host, int(address[1])

    def knows_a_replica(self) -> bool:
        with self.client(timeout=1.0) as client:
            replicas = client.sentinel_slaves(SENTINEL_SERVICE)
        return any(not r["is_disconnected"] and not r["is_sdown"] for r in replicas)


@dataclass
class SentinelSet:
    """A primary, its replica and one sentinel (quorum 1)."""

    primary: RedisServer
    replica: RedisServer
    sentinel: SentinelServer
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f"{quote(self.password, safe='')}@" if self.password else ""
        return f"redis+sentinel://{auth}127.0.0.1:{self.sentinel.port}/{SENTINEL_SERVICE}"

    def current_primary(self) -> RedisServer:
        address = self.sentinel.primary_address()
        assert address is not None, "the sentinel knows no primary"
        return self.replica if address[1] == self.replica.port else self.primary

    def client_for(self, key: str) -> redis.Redis:
        """A client on the server that holds `key` now: the current primary."""
        return self.current_primary().client()

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary by PID (a crash); returns the server killed."""
        primary = self.current_primary()
        primary.kill()
        return primary

    def wait_for_new_primary(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Until the sentinel names another primary, and that one takes writes."""

        def promoted() -> RedisServer | None:
            address = self.sentinel.primary_address()
            if address is None or address[1] == old.port:
                return None
            new = self.replica if address[1] == self.replica.port else self.primary
            with new.client(timeout=1.0) as client:
                return new if client.info("replication")["role"] == "master" else None

        new = wait_until(
            promoted, timeout, "a replica promoted by the sentinel", describe=self.sentinel.logs
        )
        assert new is not None  # wait_until returns only what is truthy
        return new

    def servers(self) -> list[RedisServer]:
        return [self.primary, self.replica, self.sentinel]


def _wait_for_replica_link(replica: RedisServer, timeout: float) -> None:
    def linked() -> bool:
        with replica.client(timeout=1.0) as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    wait_until(linked, timeout, f"replica on {replica.port} in sync", describe=replica.logs)


@contextmanager
def run_sentinel_set(workdir: Path, timeout: float = 30.0) -> Iterator[SentinelSet]:
    """A primary, a replica in sync with it, and a sentinel that sees both."""
    require_redis_server()
    with ExitStack() as stack:
        primary = _new_server(workdir, "sentinel-primary")
        stack.callback(primary.stop)
        primary.start()
        replica = _new_server(
            workdir, "sentinel-replica", ("--replicaof", "127.0.0.1", str(primary.port))
        )
        stack.callback(replica.stop)
        replica.start()
        _wait_for_replica_link(replica, timeout)
        directory = workdir / f"sentinel-{time.monotonic_ns()}"
        directory.mkdir(parents=True)
        sentinel = SentinelServer(free_port(), directory, primary_port=primary.port)
        stack.callback(sentinel.stop)
        sentinel.start()
        # Sentinel learns of replicas from the primary's INFO: until it has, it
        # has nobody to promote.
        wait_until(
            sentinel.knows_a_replica, timeout, "the sentinel seeing the replica", interval=0.1
        )
        yield SentinelSet(primary, replica, sentinel)


# --- Cluster ----------------------------------------------------------------


@dataclass
class RedisCluster:
    """Six nodes: three primaries, each with one replica (`redis-cli --cluster create`)."""

    nodes: list[RedisServer]
    killed: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n not in self.killed]

    def slot_of(self, key: str) -> int:
        with self.alive()[0].client() as client:
            return int(client.execute_command("CLUSTER", "KEYSLOT", key))

    def owner_port(self, slot: int, asking: RedisServer | None = None) -> int | None:
        """The port of the primary serving `slot`, as one live node sees it."""
        with (asking or self.alive()[0]).client(timeout=1.0) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        for start, end, owner, *_ in ranges:
            if int(start) <= slot <= int(end):
                return int(owner[1])
        return None

    def primary_for(self, key: str) -> RedisServer:
        port = self.owner_port(self.slot_of(key))
        return next(n for n in self.nodes if n.port == port)

    def client_for(self, key: str) -> redis.Redis:
        """A client on the primary that holds `key`: to see that the service put it there."""
        return self.primary_for(key).client()

    def kill_primary_for(self, key: str) -> RedisServer:
        """SIGKILL by PID the primary that holds `key`'s slot; returns it."""
        primary = self.primary_for(key)
        primary.kill()
        self.killed.append(primary)
        return primary

    def wait_for_slot_owner_change(
        self, key: str, old: RedisServer, timeout: float = 30.0
    ) -> RedisServer:
        """Until every live node says another primary serves `key`'s slot, and the
        cluster is whole again (cluster_state:ok everywhere)."""
        slot = self.slot_of(key)

        def moved() -> RedisServer | None:
            owners = set()
            for node in self.alive():
                with node.client(timeout=1.0) as client:
                    if client.execute_command("CLUSTER", "INFO").find(b"cluster_state:ok") < 0:
                        return None
                owners.add(self.owner_port(slot, node))
            if len(owners) != 1 or old.port in owners or None in owners:
                return None
            port = owners.pop()
            return next(n for n in self.nodes if n.port == port)

        owner = wait_until(moved, timeout, f"slot {slot} served by a promoted replica")
        assert owner is not None  # wait_until returns only what is truthy
        return owner

    def primaries(self) -> list[RedisServer]:
        """The live nodes serving slots now (a failover changes which)."""
        primaries = []
        for node in self.alive():
            with node.client(timeout=1.0) as client:
                if client.info("replication")["role"] == "master":
                    primaries.append(node)
        return primaries

    def command_stats(self) -> RedisTraffic:
        """INFO commandstats and bytes, summed over the primaries (RedisServer.command_stats):
        what clients asked of the cluster. Replicas are left out, as they count
        again every write they replay; nodes' housekeeping is on the cluster
        bus, never counted. Take both readings with the same primaries."""
        return functools.reduce(operator.add, (n.command_stats() for n in self.primaries()))


def _cluster_ok(node: RedisServer) -> bool:
    with node.client(timeout=1.0) as client:
        info = client.execute_command("CLUSTER", "INFO").decode()
    return "cluster_state:ok" in info and "cluster_known_nodes:6" in info


@contextmanager
def run_redis_cluster(workdir: Path, timeout: float = 60.0) -> Iterator[RedisCluster]:
    """Six nodes joined into a cluster, every node agreeing it is whole, replicas in sync."""
    require_redis_server()
    with ExitStack() as stack:
        nodes = []
        for n in range(6):
            node = _new_server(
                workdir,
                f"cluster-{n}",
                (
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
                    # The bus's own free port: port + 10000 may be taken, or past 65535.
                    "--cluster-port", str(free_port()),
                ),
            )  # fmt: skip
            stack.callback(node.stop)
            node.start()
            nodes.append(node)
        create = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes)]
        subprocess.run(
            [*create, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        for node in nodes:
            wait_until(functools.partial(_cluster_ok, node), timeout, f"node {node.port} joined")
        for node in nodes:
            with node.client() as client:
                role = client.info("replication")["role"]
            if role == "slave":
                _wait_for_replica_link(node, timeout)
        yield RedisCluster(nodes)


# Each has `.url` (QA_REDIS_URL) and `.client_for(key)` (where that key lives now).
RedisTopology = TlsRedisServer | SentinelSet | RedisCluster
