"""Watches QA_PROMPTS_DIR for the app's life and reloads the PromptLibrary on a change.

Every replica watches its own mount (a Kubernetes ConfigMap, a volume): no
replica tells another. The directory is watched, not the files: a ConfigMap
update swaps its `..data` symlink, and the library re-reads every file by name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from watchfiles import awatch

from qa_service.generation.prompt_library import PromptLibrary

log = logging.getLogger(__name__)

# watchfiles groups a burst of events (an editor's write-and-rename, a swap)
# and yields once they stop for STEP_MS, or after DEBOUNCE_MS at the latest:
# a change is in force well within the 2 s promised.
DEBOUNCE_MS = 400
STEP_MS = 50
# Also re-read this often with no event: a mount whose events never come
# (some network filesystems) or a directory that came back still reloads.
RESCAN_MS = 5_000
# How long shutdown waits for the watching thread to see its stop event.
STOP_SECONDS = 2.0


@asynccontextmanager
async def open_prompt_watcher(
    library: PromptLibrary, rescan_ms: int = RESCAN_MS
) -> AsyncIterator[asyncio.Task[None]]:
    """Reload `library` on every change in its directory until the block ends,
    and every `rescan_ms` without one."""
    stop = asyncio.Event()
    watching = _watch(library, stop, rescan_ms)
    task = asyncio.get_running_loop().create_task(watching, name="prompt-watcher")
    try:
        yield task
    finally:
        # The stop event ends the thread's wait within STEP_MS; a cancel alone
        # would leave it blocked until RESCAN_MS.
        stop.set()
        with anyio.move_on_after(STOP_SECONDS, shield=True):
            await asyncio.wait({task})
        if not task.done():
            task.cancel()
            with anyio.move_on_after(STOP_SECONDS, shield=True):
                await asyncio.wait({task})


async def _watch(library: PromptLibrary, stop: asyncio.Event, rescan_ms: int) -> None:
    directory = library.directory
    if directory is None:
        return
    try:
        # A file changed between start-up's read and this watch's start.
        library.reload()
        async for _changes in awatch(
            directory,
            watch_filter=None,  # any change: the symlinks of a swap are dot-files
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop,
            rust_timeout=rescan_ms,
            yield_on_timeout=True,
        ):
            library.reload()
    except Exception as exc:  # noqa: BLE001 - a dead watcher keeps the prompts; cancellation passes
        # The directory is gone, or the watch cannot be set up: serve what is
        # in force, and say so once. The type only: an OS error's text names paths.
        log.warning(
            "prompt watcher stopped; the prompts in force stay until a restart",
            extra={"prompts_dir": str(directory), "cause": type(exc).__name__},
        )


__all__ = ["open_prompt_watcher"]
