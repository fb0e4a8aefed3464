"""The Redis answer store (QA_REDIS_URL): answers shared by every replica.

One answer is a few keys, all with the answer id as their cluster hash tag:
    qa:answer:{id}          hash: the request's fingerprint
    qa:answer:{id}:events   stream: one entry per batch of events (stores/redis_log.py)
    qa:answer:{id}:lease    the producer is alive (PX = QA_PRODUCER_LEASE_SECONDS)
    qa:answer:{id}:readers  a reader elsewhere is attached (PX = QA_RESUME_GRACE_SECONDS)
and cancels go out on the `qa:cancel` channel.

The producer's events are held in this process and written behind, in batches,
by stores/write_behind.py, which also writes them again after a failover or a
restart lost them. Every key expires QA_RESUME_TTL_SECONDS after its producer's last
renewal of it, or the log's last batch, so nothing outlives a dead replica for long.
Redis errors (and commands past their deadline) become StoreUnavailableError in
redis_client.py; here, reads ride out an outage of up to QA_REDIS_OUTAGE_SECONDS
(core/outages.py), and a lease or a reader's presence that is missing right
after one is not believed until the store has worked for a lease again.

Readers' commands (one XREAD BLOCK per followed answer, stores/followed.py;
presence, lease checks) go through `reads`, a client with a pool of its own:
however many readers come, the producers' commands on `client` (batches,
leases, `describe_for_producer`) always find a connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from qa_service.answers.follow import FollowTiming
from qa_service.answers.ports import LogInfo
from qa_service.core.errors import StoreUnavailableError
from qa_service.core.events import AnswerEvent, is_terminal
from qa_service.core.loops import Loop
from qa_service.core.outages import Outage, StoreHealth
from qa_service.stores.followed import FollowedAnswers
from qa_service.stores.redis_client import (
    COMMAND_DEADLINE_SECONDS,
    REDIS_ERRORS,
    RedisClient,
    mapped_errors,
    subscriber,
    value_text,
)
from qa_service.stores.redis_log import (
    BATCH_SCRIPT,
    RedisLogSettings,
    batch_reply,
    decode,
    encode,
    entry_id,
    log_top,
    read_from,
)
from qa_service.stores.shared_calls import SharedCalls
from qa_service.stores.write_behind import BatchOutcome, BatchReply, WrittenAnswers

log = logging.getLogger(__name__)

CANCEL_CHANNEL = "qa:cancel"

_T = TypeVar("_T")


def _keys(answer_id: str) -> tuple[str, str, str, str]:
    base = f"qa:answer:{{{answer_id}}}"
    return base, f"{base}:events", f"{base}:lease", f"{base}:readers"


class RedisAnswerStore:
    def __init__(
        self,
        client: RedisClient,
        settings: RedisLogSettings,
        reads: RedisClient | None = None,
    ) -> None:
        """`client` for the producers' writes; `reads` (default: `client`) for readers."""
        self._client = client
        self._reads = reads or client
        self._settings = settings
        self._batch = client.register_script(BATCH_SCRIPT)
        self._health = StoreHealth()
        self._followed = FollowedAnswers(self._read_stream, FollowTiming().poll_seconds)
        # The answers written here: read from memory by this process's readers,
        # and handed to their feed when let go, so no read of Redis copies them.
        self._written = WrittenAnswers(self._send_batch, settings.writes, self._let_go)
        # Readers attached in this process, until when: the producer here asks
        # no one else, and they need no key of their own in Redis.
        self._present_here: dict[str, float] = {}
        # When each answer written here last had its stream's expiry renewed.
        self._stream_ttl_renewed: dict[str, float] = {}
        # Readers of one answer here ask these at once: one Redis call for all.
        self._descriptions: SharedCalls[LogInfo | None] = SharedCalls()
        self._lease_checks: SharedCalls[bool] = SharedCalls()

    def _let_go(self, answer_id: str, events: list[AnswerEvent]) -> None:
        self._present_here.pop(answer_id, None)
        self._stream_ttl_renewed.pop(answer_id, None)
        self._followed.hand_over(answer_id, events)

    async def aclose(self) -> None:
        await self._written.aclose()
        await self._descriptions.aclose()
        await self._lease_checks.aclose()

    async def create(
        self,
        answer_id: str,
        fingerprint: str,
        lease_seconds: float = 0.0,
        reader_seconds: float = 0.0,
    ) -> None:
        answer, _, lease, _ = _keys(answer_id)
        # One transaction: a hash with no expiry would outlive a crash between the two.
        async with self._calls(), self._client.pipeline(transaction=True) as pipe:
            pipe.hset(answer, "fingerprint", fingerprint)
            pipe.expire(answer, self._settings.ttl_seconds)
            if lease_seconds > 0:
                pipe.set(lease, 1, px=int(lease_seconds * 1000))
            await pipe.execute()
        if reader_seconds > 0:
            self._present_here[answer_id] = self._now() + reader_seconds
        self._written.expect(answer_id, fingerprint)

    async def describe(self, answer_id: str) -> LogInfo | None:
        return await self._descriptions.call(
            answer_id, lambda: self._riding_out(lambda: self._describe(self._reads, answer_id))
        )

    async def describe_for_producer(self, answer_id: str) -> LogInfo | None:
        # On the producers' pool: with the readers' pool full, the producer's
        # last event waited 3 s for a connection there, and was lost.
        return await self._describe(self._client, answer_id)

    async def _describe(self, client: RedisClient, answer_id: str) -> LogInfo | None:
        answer, events, _, _ = _keys(answer_id)
        async with self._calls(), client.pipeline(transaction=False) as pipe:
            pipe.hget(answer, "fingerprint")
            pipe.xrevrange(events, count=1)
            fingerprint, newest = await pipe.execute()
        if fingerprint is None:
            return None
        top = log_top(newest[0][0] if newest else None)
        return LogInfo(value_text(fingerprint), top.last_seq, top.final_seq)

    async def append(self, answer_id: str, event: AnswerEvent) -> bool:
        if not self._written.holds(answer_id):
            # A reader ending the log of a producer it found lost: at once, and
            # only where the log ends (a compare-and-set).
            reply = await self._riding_out(lambda: self._send_batch(answer_id, "", [event], False))
            return reply.outcome is BatchOutcome.STORED
        if not self._written.add(answer_id, event):
            return False
        if is_terminal(event):
            # The end is not the end until the store holds it: the producer's
            # lease goes after this, and readers elsewhere wait for it.
            return await self._written.wait_settled(answer_id)
        return True

    async def _send_batch(
        self, answer_id: str, fingerprint: str, events: list[AnswerEvent], rewrite: bool
    ) -> BatchReply:
        answer, stream, _, _ = _keys(answer_id)
        settings = self._settings
        args: list[str | int] = [
            events[0].seq,
            entry_id(events),
            encode(events),
            settings.max_entries,
            settings.ttl_seconds,
            fingerprint,
            int(rewrite),
        ]
        async with self._calls():
            return batch_reply(await self._batch(keys=[stream, answer], args=args))

    def start_following(self, answer_id: str) -> Loop:
        return self._followed.start(answer_id)

    async def read(self, answer_id: str, after: int, wait_seconds: float) -> list[AnswerEvent]:
        written = await self._written.read(answer_id, after, wait_seconds)
        if written is not None:
            return written
        followed = await self._followed.read(answer_id, after, wait_seconds)
        if followed is not None:
            return followed
        return await self._read_stream(answer_id, after, wait_seconds)

    async def _read_stream(
        self, answer_id: str, after: int, wait_seconds: float
    ) -> list[AnswerEvent]:
        return await self._riding_out(lambda: self._read_once(answer_id, after, wait_seconds))

    async def _read_once(
        self, answer_id: str, after: int, wait_seconds: float
    ) -> list[AnswerEvent]:
        _, stream, _, _ = _keys(answer_id)
        clock = asyncio.get_running_loop()
        deadline = clock.time() + wait_seconds
        start = read_from(after)
        while True:
            left = deadline - clock.time()
            block = max(1, int(left * 1000)) if left > 0 else None
            async with self._calls(max(left, 0.0)):
                reply = await self._reads.xread({stream: start}, count=1000, block=block)
            if not reply:
                return []
            entries = _entries(reply)
            events = [
                event for _, fields in entries for event in decode(fields) if event.seq > after
            ]
            if events or block is None:
                return events
            # Only the end's batch, all of it read already: wait past it (nothing comes).
            start = value_text(entries[-1][0])

    async def renew_lease(self, answer_id: str, seconds: float) -> None:
        answer, stream, lease, readers = _keys(answer_id)
        ttl = self._settings.ttl_seconds
        async with self._calls(), self._client.pipeline(transaction=False) as pipe:
            pipe.set(lease, 1, px=int(seconds * 1000))
            pipe.expire(answer, ttl)
            # Who follows it from another instance decides how soon its batches go.
            pipe.exists(readers)
            if self._stream_ttl_due(answer_id):
                pipe.expire(stream, ttl)
            _, kept, watched, *_ = await pipe.execute()
        if not kept:
            # The answer's keys are gone (a restart, a failover that lost them):
            # written again from memory now, not at the producer's next piece.
            # And the store counts as just back: a reader's presence went with
            # them (redis-py's own retries may have hidden a quick restart).
            self._health.failed()
            self._written.rewrite_all(answer_id)
        self._written.set_watched_elsewhere(answer_id, bool(watched))

    def _stream_ttl_due(self, answer_id: str) -> bool:
        """Its stream's expiry is renewed every quarter of its TTL, not every beat
        (a command a second per answer); its first batch set it."""
        now = self._now()
        renewed = self._stream_ttl_renewed.get(answer_id)
        if renewed is None:
            self._stream_ttl_renewed[answer_id] = now
            return False
        if now - renewed < self._settings.ttl_seconds / 4:
            return False
        self._stream_ttl_renewed[answer_id] = now
        return True

    async def release_lease(self, answer_id: str) -> None:
        self._written.producer_done(answer_id)
        # Its heartbeat, the only one to ask them, has stopped; a log whose
        # writes failed is never let go (_let_go), and would keep its entries.
        self._present_here.pop(answer_id, None)
        self._stream_ttl_renewed.pop(answer_id, None)
        _, _, lease, _ = _keys(answer_id)
        async with self._calls():
            await self._client.delete(lease)

    async def producer_alive(self, answer_id: str) -> bool:
        return await self._lease_checks.call(answer_id, lambda: self._producer_alive(answer_id))

    async def _producer_alive(self, answer_id: str) -> bool:
        _, _, lease, _ = _keys(answer_id)
        lease_seconds = self._settings.lease_seconds

        async def exists() -> bool:
            async with self._calls():
                return bool(await self._reads.exists(lease))

        for check in range(2):
            if check:
                # Missing once proves little: a failover may have taken it, and
                # the producer renews it a third of a lease later.
                await asyncio.sleep(lease_seconds / 2)
            if await self._riding_out(exists):
                return True
        # Right after an outage it may not be renewed yet, though its producer
        # lives: its heartbeat may still be stuck in a call to the old primary
        # (up to a command's deadline), then renews a third of a lease later.
        return not self._health.steady_for(lease_seconds + COMMAND_DEADLINE_SECONDS)

    async def touch_reader(self, answer_id: str, seconds: float) -> None:
        _, _, _, readers = _keys(answer_id)
        if self._written.holds(answer_id):
            # Its producer is here, and asks only this process (no Redis call;
            # a full readers' pool, or an outage, cannot cancel an answer whose
            # reader is attached).
            self._present_here[answer_id] = self._now() + seconds
            return
        async with self._calls():
            await self._reads.set(readers, 1, px=int(seconds * 1000))

    def attach_reader(self, answer_id: str) -> bool:
        return False  # readers on other replicas count too: they touch it in a loop

    def detach_reader(self, answer_id: str, seconds: float) -> None:
        # Its producer here: the grace counts from this leave. Its last touch
        # was up to a refresh earlier, or, on a starved loop, longer: a client
        # that resumed at once on another replica found its answer cancelled
        # before that replica's first touch (test_redis_pool, on a busy CI).
        # A reader of an answer made elsewhere: its touches expire by themselves.
        if self._written.holds(answer_id) and answer_id in self._present_here:
            self._present_here[answer_id] = self._now() + seconds

    async def reader_present(self, answer_id: str) -> bool:
        until = self._present_here.get(answer_id)
        if until is not None:
            if until > self._now():
                return True
            del self._present_here[answer_id]
        if self._written.holds(answer_id):
            # Its heartbeat asked Redis a moment ago (renew_lease).
            present_elsewhere = self._written.is_watched_elsewhere(answer_id)
        else:
            _, _, _, readers = _keys(answer_id)
            async with self._calls():
                present_elsewhere = bool(await self._client.exists(readers))
        if present_elsewhere:
            return True
        # A reader elsewhere touched it within the grace; an outage may have lost that.
        return not self._health.steady_for(self._settings.grace_seconds + COMMAND_DEADLINE_SECONDS)

    async def request_cancel(self, answer_id: str) -> None:
        async with self._calls():
            await self._client.publish(CANCEL_CHANNEL, answer_id)

    async def cancel_requests(self) -> AsyncIterator[str]:
        """Subscribed for the app's life; a lost connection is re-subscribed.
        A cancel published while this replica was cut off from Redis is lost:
        its answer then ends by its grace period, as after a hang-up."""
        attempt = 0
        while True:
            try:
                async with subscriber(self._client, attempt) as pubsub:
                    await pubsub.subscribe(CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            yield value_text(message["data"])
            except REDIS_ERRORS as exc:
                # Any Redis error: a listener that died would end cross-replica cancel.
                log.warning("cancel subscription lost (%s); subscribing again", type(exc).__name__)
                attempt += 1
                await asyncio.sleep(1.0)

    @asynccontextmanager
    async def _calls(self, blocks_for: float = 0.0) -> AsyncIterator[None]:
        """Redis calls, their failures noted (see StoreHealth)."""
        try:
            async with mapped_errors(blocks_for):
                yield
        except StoreUnavailableError:
            self._health.failed()
            raise

    async def _riding_out(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """`call`, again after each failure, until the outage outlasts its bound."""
        outage = Outage(self._settings.writes.outage_seconds)
        while True:
            try:
                return await call()
            except StoreUnavailableError:
                if not await outage.wait_before_retry():
                    raise

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    # XREAD's RESP2 reply: [[stream, [(id, {field: value}), ...]]]
    return cast(list[tuple[bytes, dict[bytes, bytes]]], reply[0][1])
