"""The listener accepts every waiting connection in one turn of a busy loop (listener.py)."""

from __future__ import annotations

import asyncio
import socket
import time

import uvloop

from qa_service.listener import Listener

WAITING = 100
TURN_SECONDS = 0.02


MADE: list[asyncio.BaseTransport] = []


class Counted(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        MADE.append(transport)


async def accepted_within_turns(turns: int) -> int:
    """Connections made while a loop busy TURN_SECONDS a turn turned `turns` times,
    WAITING of them in the accept queue before the first turn."""
    MADE.clear()
    loop = asyncio.get_running_loop()
    listening = socket.create_server(("127.0.0.1", 0), backlog=2 * WAITING)
    clients = [socket.create_connection(listening.getsockname()) for _ in range(WAITING)]
    listener = Listener(listening, Counted, backlog=2 * WAITING)
    turned = asyncio.Event()
    count = 0

    def busy_turn() -> None:
        nonlocal count
        began = time.perf_counter()
        while time.perf_counter() - began < TURN_SECONDS:
            pass  # the loop's work of one turn: answers' pieces, under load
        count += 1
        if count == turns:
            turned.set()
        else:
            loop.call_soon(busy_turn)

    try:
        loop.call_soon(busy_turn)
        async with asyncio.timeout(30):
            await turned.wait()
        return len(MADE)
    finally:
        listener.close()
        for transport in MADE:
            transport.close()
        for client in clients:
            client.close()


def test_a_busy_loop_accepts_every_waiting_connection_at_once() -> None:
    # uvloop's own server accepts one a turn: 5 of the 100 here.
    assert uvloop.run(accepted_within_turns(5)) == WAITING
