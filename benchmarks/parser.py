"""Per-chunk cost of the writer's chain with the stock and the inline parser.

    uv run python -m benchmarks.parser [--chunks 2000] [--rounds 5]

A fake chat model streams N chunks with no waiting, through the service's own
prompt | model | parser chain, so the figure is the chain's CPU per chunk.
Both parsers run alternately in one process, and the result is reported as a
ratio, since these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGenerationChunk

from qa_service.generation.prompts import QUERY_VARIABLE, load_prompts
from qa_service.generation.writer import InlineStrOutputParser

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"


class _Burst(GenericFakeChatModel):
    chunks: int = 2000

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for n in range(self.chunks):
            yield ChatGenerationChunk(message=AIMessageChunk(content=f" tok{n}"))


async def _cpu_per_chunk(parser: StrOutputParser, chunks: int) -> float:
    template = load_prompts(PROMPTS)["explain"].template
    chain = template | _Burst(messages=iter(()), chunks=chunks) | parser
    started = time.process_time()
    text = "".join([piece async for piece in chain.astream({QUERY_VARIABLE: "q"})])
    spent = time.process_time() - started
    assert text == "".join(f" tok{n}" for n in range(chunks))
    return spent / chunks


async def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--chunks", type=int, default=2000)
    args.add_argument("--rounds", type=int, default=5)
    options = args.parse_args()
    stock: list[float] = []
    inline: list[float] = []
    for _ in range(options.rounds):
        stock.append(await _cpu_per_chunk(StrOutputParser(), options.chunks))
        inline.append(await _cpu_per_chunk(InlineStrOutputParser(), options.chunks))
    best_stock, best_inline = min(stock), min(inline)
    print(
        json.dumps(
            {
                "chunks": options.chunks,
                "rounds": options.rounds,
                "stock_us_per_chunk": round(best_stock * 1e6, 1),
                "inline_us_per_chunk": round(best_inline * 1e6, 1),
                "inline_over_stock": round(best_inline / best_stock, 3),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
