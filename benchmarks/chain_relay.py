"""Baseline for benchmarks/load.py: a naive sse-starlette relay of the service's own chain.

`prompt | ChatOpenAI | StrOutputParser()`, streamed with `astream`, each piece
sent as `data: {"text": ...}` through sse-starlette's EventSourceResponse, and
`data: {"done": {}}` at the end (so a reader can tell a whole answer from a cut
one). The prompt is the service's default one (prompts/explain.toml). No event
ids, no keep-alive tuning, no resumption, no callbacks, no error mapping: what
"a plain sse-starlette relay of the same chain" in issue 12 compares against.
Empty pieces are skipped, as the service skips them.

    OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 python -m benchmarks.chain_relay PORT

Runs under the same uvicorn (uvloop, httptools) as the service.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from sse_starlette import EventSourceResponse

PROMPT = tomllib.loads(
    (Path(__file__).resolve().parents[1] / "prompts" / "explain.toml").read_text("utf-8")
)

chain = (
    ChatPromptTemplate.from_messages([("system", PROMPT["system"]), ("human", PROMPT["user"])])
    | ChatOpenAI(
        model="gpt-4o-mini",
        api_key=os.environ.get("OPENAI_API_KEY", "sk-bench-not-a-real-key"),
        base_url=os.environ["OPENAI_BASE_URL"],
        max_retries=0,
        timeout=120,
        streaming=True,
    )
    | StrOutputParser()
)

app = FastAPI()


@app.get("/ai_write")
async def ai_write(query: str) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        async for piece in chain.astream({"concept": query}):
            if piece:
                yield {"data": json.dumps({"text": piece}, ensure_ascii=False)}
        yield {"data": json.dumps({"done": {}})}

    return EventSourceResponse(events())


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )
