"""The cluster client's one override of redis-py (stores/redis_client.py):
XREAD's slot found from its arguments, never by asking a node."""

from __future__ import annotations

import inspect

from redis.asyncio.cluster import RedisCluster

from qa_service.stores.redis_client import _Cluster


async def test_xreads_slot_comes_from_its_keys_with_no_round_trip() -> None:
    # No node is reachable: asking one (COMMAND GETKEYS) would fail.
    client = _Cluster(host="127.0.0.1", port=1)
    key = "qa:answer:{abc}:events"

    for args in (
        ("XREAD", b"BLOCK", "500", b"COUNT", "1000", b"STREAMS", key, "0-4"),
        ("XREAD", b"STREAMS", key.encode(), b"0-0"),
    ):
        assert await client._determine_slot(*args) == client.keyslot(key)


def test_the_redis_py_method_it_overrides_is_still_there_with_its_shape() -> None:
    """A redis-py upgrade that renames or reshapes it would leave every XREAD
    on a cluster asking one node again: this says so before a failover does."""
    parameters = list(inspect.signature(RedisCluster._determine_slot).parameters)
    assert parameters == ["self", "command", "args"]
