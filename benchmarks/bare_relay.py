"""Baseline for the benchmark: the least a Python relay can do with the same stream.

httpx reads the provider's chat-completions stream, and each content delta goes
out as `data: {"text": ...}`. There is no LangChain, no event ids, no keep-alive
and no error handling. Run under the same uvicorn (uvloop, httptools) as the
service, it is the floor the service's own cost is measured against.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ["OPENAI_BASE_URL"]
client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None))


async def relay(request: Request) -> StreamingResponse:
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": request.query_params["query"]}],
    }

    async def events() -> AsyncIterator[bytes]:
        async with client.stream("POST", f"{UPSTREAM}/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = json.loads(line[6:])["choices"]
                if choices and (text := choices[0]["delta"].get("content")):
                    yield b"data: " + json.dumps({"text": text}).encode() + b"\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


app = Starlette(routes=[Route("/ai_write", relay)])

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )
