"""The soak's mixed traffic (benchmarks/soak.py): what clients do to two replicas over Redis.

Each worker loops, picking one kind of exchange at random (KINDS, with their
weights), as a new client each time (its own `X-Forwarded-For`, which the
service trusts from 127.0.0.1), so the per-client limit refuses only the
exchange that asks for it:

- complete: an answer read to its `done`;
- hangup: a long answer left at a random point (before the response, after
  the headers, or after 0 to 40 texts); no reader comes back, so the grace
  runs out and the answer is cancelled;
- cancel: `POST /answers/{id}/cancel` on either replica after a few texts,
  the stream read on to its `error` (`cancelled`), or `done` if it won;
- resume: a hang-up after a few texts, then `Last-Event-ID` on a random
  replica (the other one, mostly); the two reads joined are the answer;
- refusal: a bad request (`422`), or a client over QA_CLIENT_MAX_STREAMS
  (two answers open, the third refused `429`, then both left);
- slow: a reader with a 4 KB receive buffer that sleeps between reads.

Every answer read to its end is checked for exactness against what the stub
sent; `Tally` counts each kind's exchanges and what went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.load import pieces

SHORT, LONG = "mk-soak-short", "mk-soak-long"
PIECE_DELAY = 0.02
REPLIES = {SHORT: pieces(20), LONG: pieces(120)}
# The longest an answer runs: the long reply, at the stub's pace.
LONGEST_ANSWER_SECONDS = len(REPLIES[LONG]) * PIECE_DELAY
KINDS = {"complete": 30, "hangup": 15, "cancel": 10, "resume": 20, "refusal": 15, "slow": 10}
EXCHANGE_DEADLINE = 60.0


def stub_spec() -> dict[str, Any]:
    """What benchmarks/load_stub.py answers each marker with."""
    return {
        marker: {"pieces": text, "first_delay": 0.02, "piece_delay": PIECE_DELAY}
        for marker, text in REPLIES.items()
    }


@dataclass
class Reply:
    status: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    body: bytes = b""

    @property
    def text(self) -> str:
        return "".join(e.get("text", "") for e in self.events)

    @property
    def answer_id(self) -> str:
        return str(self.events[0]["meta"]["answer_id"])

    @property
    def texts(self) -> int:
        return sum("text" in e for e in self.events)

    def ended_with(self) -> str:
        last = self.events[-1] if self.events else {}
        return "done" if "done" in last else str(last.get("error", {}).get("code", "none"))


class EventParser:
    """SSE over bytes, enough for the service's own framing: `id:` and one `data:` line."""

    def __init__(self) -> None:
        self.buffer = b""
        self.event_id = ""
        self.data = ""

    def feed(self, chunk: bytes) -> list[tuple[str, dict[str, Any]]]:
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        events = []
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8")
            if not line:
                if self.data:
                    events.append((self.event_id, json.loads(self.data)))
                self.event_id, self.data = "", ""
            elif line.startswith("id:"):
                self.event_id = line[3:].strip()
            elif line.startswith("data:"):
                self.data = line[5:].removeprefix(" ")
        return events


async def exchange(
    url: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    hang_up: Callable[[Reply], bool] = lambda _: False,
    slow: float = 0.0,
) -> Reply:
    """One HTTP/1.1 request on its own connection, its SSE events read until the
    body ends or `hang_up(reply so far)` says to leave (the connection is closed)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    try:
        sock.setblocking(False)
        if slow:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    except BaseException:
        sock.close()  # the writer closes it from here on
        raise
    reply = Reply()
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        length = "Content-Length: 0\r\n" if method == "POST" else ""
        writer.write(f"{head}{length}Connection: close\r\n\r\n".encode())
        status_line, *_ = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        reply.status = int(status_line.split(" ")[1])
        if reply.status != 200 or not path.startswith(("/ai_write", "/answers/")):
            reply.body = await reader.read()
            return reply
        if path.endswith("/cancel"):
            reply.body = await reader.read()
            return reply
        parser = EventParser()
        while not hang_up(reply):
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                break
            for event_id, event in parser.feed((await reader.readexactly(size + 2))[:-2]):
                reply.events.append(event)
                reply.ids.append(event_id)
            if slow:
                await asyncio.sleep(slow)
        return reply
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@dataclass
class Tally:
    """Exchanges per kind, answers started (with when, for the Redis keys' bound),
    and every problem, by kind and what happened."""

    done: dict[str, int] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)
    started_at: list[float] = field(default_factory=list)
    in_flight: int = 0

    def problem(self, kind: str, what: str) -> None:
        key = f"{kind}: {what}"
        self.problems[key] = self.problems.get(key, 0) + 1

    def started_since(self, moment: float) -> int:
        return sum(1 for t in self.started_at if t >= moment)


class Traffic:
    """`workers` clients looping over KINDS against `replicas` until `stop` is set."""

    def __init__(self, replicas: list[str], workers: int, seed: int = 25) -> None:
        self.replicas = replicas
        self.workers = workers
        self.tally = Tally()
        self._random = random.Random(seed)
        self._clients = 0

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(stop) for _ in range(self.workers)))

    async def _worker(self, stop: asyncio.Event) -> None:
        kinds, weights = list(KINDS), list(KINDS.values())
        while not stop.is_set():
            kind = self._random.choices(kinds, weights)[0]
            self.tally.in_flight += 1
            try:
                async with asyncio.timeout(EXCHANGE_DEADLINE):
                    await getattr(self, f"_{kind}")(kind)
            except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
                self.tally.problem(kind, type(exc).__name__)
            finally:
                self.tally.in_flight -= 1
            self.tally.done[kind] = self.tally.done.get(kind, 0) + 1

    def _client(self) -> dict[str, str]:
        self._clients += 1
        n = self._clients
        return {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}

    def _pick(self) -> tuple[str, str]:
        """Two replicas, in random order: where to start, and where to go on."""
        first, second = self._random.sample(self.replicas, 2)
        return first, second

    async def _ask(self, url: str, marker: str, headers: dict[str, str], **kw: Any) -> Reply:
        self.tally.started_at.append(time.monotonic())
        return await exchange(url, "GET", f"/ai_write?query={marker}", headers=headers, **kw)

    def _check(self, kind: str, reply: Reply, marker: str, prefix: str = "") -> None:
        if reply.status != 200:
            self.tally.problem(kind, f"status {reply.status}")
        elif reply.ended_with() != "done":
            self.tally.problem(kind, f"ended with {reply.ended_with()}")
        elif prefix + reply.text != "".join(REPLIES[marker]):
            self.tally.problem(kind, "text differs")

    async def _complete(self, kind: str) -> None:
        marker = self._random.choice([SHORT, LONG])
        reply = await self._ask(self._pick()[0], marker, self._client())
        self._check(kind, reply, marker)

    async def _slow(self, kind: str) -> None:
        reply = await self._ask(self._pick()[0], SHORT, self._client(), slow=0.05)
        self._check(kind, reply, SHORT)

    async def _hangup(self, kind: str) -> None:
        url, texts = self._pick()[0], self._random.randint(-2, 40)
        if texts == -2:  # before the response: the request sent, the connection closed
            self.tally.started_at.append(time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._random.uniform(0.0, 0.3)):
                    await exchange(url, "GET", f"/ai_write?query={LONG}", headers=self._client())
            return
        # -1: after the headers (the held response's first text), no event read
        await self._ask(url, LONG, self._client(), hang_up=lambda r: r.texts > texts)

    async def _cancel(self, kind: str) -> None:
        start, other = self._pick()
        texts = self._random.randint(1, 30)
        reply = await self._ask(start, LONG, self._client(), hang_up=lambda r: r.texts >= texts)
        if reply.status != 200 or not reply.events:
            self.tally.problem(kind, f"no stream: {reply.status}")
            return
        where = self._random.choice([start, other])
        asked = await exchange(where, "POST", f"/answers/{reply.answer_id}/cancel")
        status = json.loads(asked.body or b"{}").get("status") if asked.status == 200 else None
        if status not in ("cancelled", "finished"):
            self.tally.problem(kind, f"cancel {asked.status} {status}")
            return
        rest = await exchange(
            self._random.choice([start, other]),
            "GET",
            f"/answers/{reply.answer_id}/events",
            headers={"Last-Event-ID": reply.ids[-1]},
        )
        ended = rest.ended_with() if rest.status == 200 else f"status {rest.status}"
        if ended not in ("done", "cancelled", "status 204"):
            self.tally.problem(kind, f"after the cancel: {ended}")

    async def _resume(self, kind: str) -> None:
        start, other = self._pick()
        where = other if self._random.random() < 0.75 else start
        texts, client = self._random.randint(1, 60), self._client()
        first = await self._ask(start, LONG, client, hang_up=lambda r: r.texts >= texts)
        if first.status != 200 or not first.ids:
            self.tally.problem(kind, f"no stream: {first.status}")
            return
        if first.ended_with() == "done":  # fewer texts than asked: pieces came together
            self._check(kind, first, LONG)
            return
        headers = {**client, "Last-Event-ID": first.ids[-1]}
        rest = await exchange(where, "GET", f"/ai_write?query={LONG}", headers=headers)
        self._check(kind, rest, LONG, prefix=first.text)

    async def _refusal(self, kind: str) -> None:
        url = self._pick()[0]
        if self._random.random() < 0.5:
            bad = await exchange(url, "GET", "/ai_write?query=", headers=self._client())
            if bad.status != 422:
                self.tally.problem(kind, f"bad request got {bad.status}")
            return
        # QA_CLIENT_MAX_STREAMS is 2: two answers held open, on either replica.
        client = self._client()
        held = [asyncio.Event(), asyncio.Event()]
        leave = asyncio.Event()

        async def hold(url: str, seen: asyncio.Event) -> Reply:
            def hang_up(reply: Reply) -> bool:
                if reply.events:
                    seen.set()
                return leave.is_set()

            try:
                return await self._ask(url, LONG, client, hang_up=hang_up)
            finally:
                seen.set()  # ended or failed: the refusal is not waited for

        holders = [
            asyncio.create_task(hold(u, h)) for u, h in zip(self.replicas, held, strict=True)
        ]
        try:
            await asyncio.gather(*(h.wait() for h in held))
            third = await exchange(url, "GET", f"/ai_write?query={SHORT}", headers=client)
            if third.status != 429:
                self.tally.problem(kind, f"third stream got {third.status}")
        finally:
            leave.set()
            await asyncio.gather(*holders, return_exceptions=True)
