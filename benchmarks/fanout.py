"""Many readers of one answer on a replica other than its producer: the Redis
connections they hold while they follow it, and whether each got it whole.

Part (c) of benchmarks/redis_log.py. Issue 21's bar: 200 readers of one answer
on a replica other than the producer hold at most 20 Redis connections.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import psutil
from tests.support.redis_server import RedisServer

from benchmarks.load import Ledger, Stream, Target, one_stream

# Every wait has a deadline: the producer's meta event, and the readers' attaching.
ATTACH_DEADLINE = 30.0
SAMPLE_EVERY = 0.1


@dataclass
class Sample:
    at_s: float
    live: bool  # every reader attached, and none has had the answer's end yet
    producer: int
    follower: int
    follower_busy: int  # of them, those that ran a command within the last second
    # B's connections by the name it gives them (`qa-service:<host>:<pid>`, since
    # issue 21's store): Redis's own count, beside psutil's; 0 for a tree without names.
    follower_named: int
    all_clients: int  # INFO clients connected_clients, less the benchmark's own


@dataclass
class Readers:
    """Where the readers of the answer are."""

    count: int
    attached: int = 0  # had a first event
    refused: int = 0  # ended without one (an error status, a failed connection)
    finished: int = 0  # ended after attaching

    @property
    def settled(self) -> bool:
        """Every reader attached, or turned away."""
        return self.attached + self.refused == self.count

    @property
    def live(self) -> bool:
        """Settled, and none has had the answer's end yet."""
        return self.settled and self.finished == 0


def redis_ports(pid: int, port: int) -> set[int]:
    """The local ports of the process's (and its workers') established connections to `port`."""
    process = psutil.Process(pid)
    return {
        conn.laddr.port
        for each in (process, *process.children(recursive=True))
        for conn in each.net_connections("tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    }


def sample(redis: RedisServer, info: Any, producer: Target, follower: Target) -> Sample:
    # `info` is the benchmark's one client, so connected_clients counts it once.
    clients = int(info.info("clients")["connected_clients"]) - 1
    follower_ports = redis_ports(follower.pid, redis.port)
    clients_listed = info.client_list()
    # A connection that ran a command within the last second (CLIENT LIST's
    # `idle`, whole seconds) is in use; the rest wait in a pool.
    busy = {
        int(str(client["addr"]).rsplit(":", 1)[1])
        for client in clients_listed
        if int(client["idle"]) <= 1
    }
    named = sum(
        str(client.get("name", "")).endswith(f":{follower.pid}") for client in clients_listed
    )
    return Sample(
        0.0,
        False,
        len(redis_ports(producer.pid, redis.port)),
        len(follower_ports),
        len(follower_ports & busy),
        named,
        clients,
    )


async def fan_out(
    producer: Target,
    follower: Target,
    redis: RedisServer,
    ledger: Ledger,
    marker: str,
    marker_key: str,
    readers: int,
) -> dict[str, Any]:
    """One answer started on `producer` (its starting client reads it there), then
    `readers` readers of it by id on `follower`, from its start."""
    with redis.client() as info:
        idle = sample(redis, info, producer, follower)
        traffic0 = redis.command_stats()
        loop = asyncio.get_running_loop()
        answer_id: asyncio.Future[str] = loop.create_future()

        def on_producer_event(event: dict[str, Any]) -> None:
            if "meta" in event and not answer_id.done():
                answer_id.set_result(str(event["meta"]["answer_id"]))

        producing = asyncio.create_task(
            one_stream(producer, "c_fanout_start", marker, on_event=on_producer_event)
        )
        await asyncio.wait(
            {producing, answer_id}, timeout=ATTACH_DEADLINE, return_when="FIRST_COMPLETED"
        )
        if not answer_id.done():
            answer_id.cancel()
            started = await producing if producing.done() else None
            raise RuntimeError(f"no meta event from {producer.name}: {started}")
        path = f"/answers/{answer_id.result()}/events"
        state = Readers(readers)

        async def read() -> Stream:
            attached = False

            def on_event(event: dict[str, Any]) -> None:
                nonlocal attached
                if not attached:
                    attached = True
                    state.attached += 1

            try:
                return await one_stream(follower, "c_fanout", marker, path, on_event)
            finally:
                if attached:
                    state.finished += 1
                else:
                    state.refused += 1

        began = time.perf_counter()
        reading = [asyncio.create_task(read()) for _ in range(readers)]
        samples: list[Sample] = []
        settled_at: float | None = None
        while state.finished + state.refused < readers:
            now = sample(redis, info, producer, follower)
            now.at_s = time.perf_counter() - began
            now.live = state.live
            samples.append(now)
            if settled_at is None and state.settled:
                settled_at = now.at_s
            if now.at_s > ATTACH_DEADLINE and not state.settled:
                break  # the readers below end by their own deadline and say why
            await asyncio.sleep(SAMPLE_EVERY)
        done = list(await asyncio.gather(*reading))
        start = await producing
        traffic = redis.command_stats() - traffic0
    # The benchmark's own calls (its samples and readings) are no one's cost.
    calls = {n: c for n, c in traffic.calls.items() if n not in ("info", "client|list")}
    ledger.check([start, *done], marker_key)
    live = [s for s in samples if s.live]
    whole = sum(s.outcome == "done" and s.text == ledger.expected[marker_key] for s in done)
    return {
        "readers": readers,
        "readers_attached": state.attached,
        "readers_refused": state.refused,
        "readers_settled_after_s": settled_at,
        "readers_whole_and_exact": whole,
        "starting_client_whole_and_exact": start.outcome == "done"
        and start.text == ledger.expected[marker_key],
        "outcomes": {o: sum(s.outcome == o for s in done) for o in {s.outcome for s in done}},
        "live_samples": len(live),
        "idle": vars(idle),
        "follower_connections_live_max": max((s.follower for s in live), default=None),
        "follower_connections_live_median": statistics.median(s.follower for s in live)
        if live
        else None,
        # A burst of readers attaching opens a connection each; held in the pool
        # afterwards, they count as held above, and here only while in use.
        "follower_busy_connections_live_max": max((s.follower_busy for s in live), default=None),
        "follower_busy_connections_live_median": statistics.median(s.follower_busy for s in live)
        if live
        else None,
        "follower_named_connections_live_max": max((s.follower_named for s in live), default=None),
        "producer_connections_live_max": max((s.producer for s in live), default=None),
        "all_clients_live_max": max((s.all_clients for s in live), default=None),
        "follower_connections_max": max(s.follower for s in samples),
        "redis_calls": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        "samples": [vars(s) for s in samples],
    }
