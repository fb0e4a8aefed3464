"""The Redis stores on a real six-node cluster, where a cluster differs from one server:
a subscription lives on one node, and a promoted replica has no scripts loaded.
(The service on a cluster, end to end: test_redis_topologies.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qa_service.stores.redis_answers import CANCEL_CHANNEL, RedisAnswerStore
from qa_service.stores.redis_client import open_redis_client
from qa_service.stores.redis_log import RedisLogSettings
from qa_service.stores.redis_slots import RedisSlotStore
from tests.support.daemon import wait_until
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import RedisCluster, run_redis_cluster

pytestmark = pytest.mark.replicas

CLIENTS = [f"client-{n}" for n in range(12)]  # sets in slots of every primary


def _subscribed_node(cluster: RedisCluster) -> RedisServer | None:
    """The live node holding a subscription to the cancel channel (PUBSUB NUMSUB is per node)."""
    for node in cluster.alive():
        with node.client(timeout=1.0) as client:
            if client.pubsub_numsub(CANCEL_CHANNEL)[0][1]:
                return node
    return None


async def test_the_cancel_subscription_moves_on_when_its_node_dies(tmp_path: Path) -> None:
    with run_redis_cluster(tmp_path) as cluster:
        async with open_redis_client(cluster.url, 8) as client:
            store = RedisAnswerStore(client, RedisLogSettings(60, 100))
            received: list[str] = []

            async def listen(cancels: AsyncIterator[str]) -> None:
                async for answer_id in cancels:
                    received.append(answer_id)

            listener = asyncio.create_task(listen(store.cancel_requests()))
            try:
                node = await asyncio.to_thread(
                    wait_until, lambda: _subscribed_node(cluster), 10, "a cancel subscription"
                )
                assert node is not None
                node.kill()
                cluster.killed.append(node)

                # Published again and again, straight to a live node (a classic
                # PUBLISH reaches every node), until one arrives: the listener
                # must have subscribed elsewhere by itself, with no command of
                # the store's client to refresh its map of the cluster.
                deadline = time.monotonic() + 20
                with cluster.alive()[0].client() as publisher:
                    while "after" not in received:
                        assert time.monotonic() < deadline, "no cancel after the node died"
                        await asyncio.to_thread(publisher.publish, CANCEL_CHANNEL, "after")
                        await asyncio.sleep(0.2)
                assert await asyncio.to_thread(_subscribed_node, cluster) not in (None, node)
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)


async def test_slots_renew_on_nodes_that_hold_no_scripts(redis_cluster: RedisCluster) -> None:
    # A replica promoted by a failover holds no scripts (Redis 7 does not
    # replicate SCRIPT LOAD): SCRIPT FLUSH everywhere is that, on every node.
    async with open_redis_client(redis_cluster.url, 8) as client:
        store = RedisSlotStore(client)
        for name in CLIENTS:
            assert await store.take(name, "s", 1, 2.0)
        for node in redis_cluster.alive():
            with node.client() as direct:
                direct.script_flush()
        await store.renew({name: {"s"} for name in CLIENTS}, 600.0)
    for name in CLIENTS:
        key = f"qa:slots:{{{name}}}"
        with redis_cluster.client_for(key) as direct:
            assert direct.pttl(key) > 60_000, key
