"""Prompt versions and reloads: PromptLibrary, its watcher, and AIWriter's chains per version."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableLambda

from qa_service.answers.connection import answer_events
from qa_service.answers.model import AnswerRequest
from qa_service.answers.registry import AnswerRegistry
from qa_service.answers.run import RunTiming
from qa_service.core.events import AnswerMeta, Text
from qa_service.generation.prompt_library import PromptLibrary, PromptVersionGoneError
from qa_service.generation.prompt_watch import open_prompt_watcher
from qa_service.generation.prompts import load_prompt
from qa_service.generation.writer import AIWriter
from qa_service.stores.memory_answers import MemoryAnswerStore
from tests.support.daemon import poll_until
from tests.support.prompt_files import prompt_file, write_atomically

REPO_PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
LIBRARY_LOG = "qa_service.generation.prompt_library"
WATCH_LOG = "qa_service.generation.prompt_watch"
# A change is promised within 2 s; the poll allows for a busy machine.
RELOAD_DEADLINE = 10.0


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prompts"
    shutil.copytree(REPO_PROMPTS, directory)
    return directory


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LIBRARY_LOG and "refused" in r.getMessage()]


def test_a_prompts_version_is_the_first_12_hex_digits_of_its_files_sha256(
    prompts_dir: Path,
) -> None:
    path = prompts_dir / "explain.toml"
    expected = hashlib.sha256(path.read_bytes()).hexdigest()[:12]

    assert load_prompt(path).version == expected
    assert PromptLibrary.load(prompts_dir, "explain").find("explain").version == expected


def test_a_changed_file_gives_a_new_version_in_force(prompts_dir: Path) -> None:
    library = PromptLibrary.load(prompts_dir, "explain")
    before = library.find("explain")

    write_atomically(prompts_dir / "explain.toml", prompt_file("Be brief."))

    assert library.reload() == ["explain"]
    after = library.find("explain")
    assert after.version != before.version
    assert after.template.format_messages(concept="x")[0].content == "Be brief."
    # The version it replaced is still found, for an answer checked on it.
    assert library.find("explain", before.version) is before


def test_an_unchanged_file_is_no_reload(prompts_dir: Path) -> None:
    library = PromptLibrary.load(prompts_dir, "explain")
    (prompts_dir / "explain.toml").touch()

    assert library.reload() == []


@pytest.mark.parametrize(
    "broken",
    [
        'system = "never closed\n',  # does not parse (a half-written file, say)
        'system = "s"\nuser = "no variable"\n',  # parses, breaks a start-up rule
    ],
)
def test_a_broken_file_keeps_the_last_good_version_and_logs_one_line(
    prompts_dir: Path, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    library = PromptLibrary.load(prompts_dir, "explain")
    good = library.find("explain")
    caplog.set_level(logging.INFO, LIBRARY_LOG)

    (prompts_dir / "explain.toml").write_text(broken)
    for _ in range(3):  # every rescan sees it; it is said once
        assert library.reload() == []

    assert library.find("explain") is good
    [line] = _refusals(caplog)
    assert line.__dict__["file"] == "explain.toml"
    assert line.__dict__["fault"]
    assert broken.strip() not in line.getMessage() + str(line.__dict__)


def test_a_new_file_that_is_broken_is_not_served(
    prompts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    library = PromptLibrary.load(prompts_dir, "explain")
    caplog.set_level(logging.INFO, LIBRARY_LOG)
    (prompts_dir / "fresh.toml").write_text('system = "s"\n')

    library.reload()

    assert "fresh" not in library
    assert len(_refusals(caplog)) == 1


def test_a_removed_file_stays_in_force_with_one_line(
    prompts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    library = PromptLibrary.load(prompts_dir, "explain")
    caplog.set_level(logging.INFO, LIBRARY_LOG)
    (prompts_dir / "eli5.toml").unlink()

    library.reload()
    library.reload()

    assert "eli5" in library
    assert [r.__dict__["prompt"] for r in caplog.records if "removed" in r.getMessage()] == ["eli5"]


def _configmap_mount(tmp_path: Path) -> Path:
    """A directory laid out as the kubelet mounts a ConfigMap: files are links
    through `..data`, a link to a timestamped directory."""
    mount = tmp_path / "mount"
    mount.mkdir()
    first = mount / "..2026_12_07_00_00_00.1"
    first.mkdir()
    (first / "explain.toml").write_text(prompt_file("First."))
    (mount / "..data").symlink_to(first.name)
    (mount / "explain.toml").symlink_to("..data/explain.toml")
    return mount


def test_a_configmap_style_symlink_swap_reloads(tmp_path: Path) -> None:
    mount = _configmap_mount(tmp_path)
    library = PromptLibrary.load(mount, "explain")

    _swap_configmap(mount, prompt_file("Second."))

    assert library.reload() == ["explain"]
    assert library.find("explain").template.format_messages(concept="x")[0].content == "Second."


def _swap_configmap(mount: Path, content: str) -> None:
    """The kubelet's update: a new timestamped directory, `..data` renamed onto it."""
    second = mount / "..2026_12_07_00_00_01.2"
    second.mkdir()
    (second / "explain.toml").write_text(content)
    (mount / "..data_tmp").symlink_to(second.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    old = [p for p in mount.iterdir() if p.name.startswith("..2026") and p != second]
    for directory in old:
        shutil.rmtree(directory)


async def test_the_watcher_reloads_a_configmap_swap_and_stops_cleanly(tmp_path: Path) -> None:
    mount = _configmap_mount(tmp_path)
    library = PromptLibrary.load(mount, "explain")
    before = library.find("explain").version

    # No rescan within the deadline: only the swap's events can reload it.
    async with open_prompt_watcher(library, rescan_ms=600_000) as task:
        # Any yield to the loop lets the watcher's first step run, and that
        # step sets the watch up before it first waits (watchfiles creates
        # its notifier before handing the wait to a thread): no timing here.
        await asyncio.sleep(0)
        _swap_configmap(mount, prompt_file("Second."))

        async def swapped() -> bool:
            return library.find("explain").version != before

        await poll_until(swapped, RELOAD_DEADLINE, "the swapped prompt in force")
    # Stopped by its stop event at the block's end, not cancelled.
    assert task.done()
    assert not task.cancelled()


async def test_a_watcher_without_its_directory_logs_once_and_keeps_the_prompts(
    prompts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    library = PromptLibrary.load(prompts_dir, "explain")
    in_force = library.in_force
    shutil.rmtree(prompts_dir)
    caplog.set_level(logging.INFO)

    async with open_prompt_watcher(library) as task:

        async def ended() -> bool:
            return task.done()

        await poll_until(ended, RELOAD_DEADLINE, "the watcher's end")
    assert library.in_force is in_force
    assert len([r for r in caplog.records if r.name == WATCH_LOG]) == 1
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1


def _echo_system_part() -> RunnableLambda[PromptValue, str]:
    """A model that answers with the system part it was sent: which version wrote it."""

    def answer(prompt: PromptValue) -> str:
        content = prompt.to_messages()[0].content
        assert isinstance(content, str)
        return content

    return RunnableLambda(answer)


async def _first_piece(stream: AsyncGenerator[str]) -> str:
    return await anext(stream)


async def test_chains_are_built_per_version_and_forgotten_when_unused(prompts_dir: Path) -> None:
    library = PromptLibrary.load(prompts_dir, "explain")
    writer = AIWriter(_echo_system_part(), library)
    old = library.find("explain").version
    assert ("explain", old) in writer.chain_versions

    stream = writer.stream("q", prompt="explain", prompt_version=old)
    async with aclosing(stream):
        old_text = await _first_piece(stream)
        # The file changes while the old answer is being written.
        write_atomically(prompts_dir / "explain.toml", prompt_file("New system part."))
        library.reload()
        new = library.find("explain").version
        new_text = "".join([p async for p in writer.stream("q", prompt="explain")])
        assert {("explain", old), ("explain", new)} <= set(writer.chain_versions)
    assert old_text.startswith("You are a concise")
    assert new_text == "New system part."
    # The old answer ended: its version, out of force, has no chain any more.
    assert ("explain", old) not in writer.chain_versions
    assert ("explain", new) in writer.chain_versions


async def test_an_answer_checked_before_a_reload_is_written_with_its_version(
    prompts_dir: Path,
) -> None:
    library = PromptLibrary.load(prompts_dir, "explain")
    writer = AIWriter(_echo_system_part(), library)
    checked_on = library.find("explain").version
    write_atomically(prompts_dir / "explain.toml", prompt_file("New system part."))
    library.reload()

    text = "".join(
        [p async for p in writer.stream("q", prompt="explain", prompt_version=checked_on)]
    )

    assert text.startswith("You are a concise")
    with pytest.raises(PromptVersionGoneError):
        await _first_piece(writer.stream("q", prompt="explain", prompt_version="0" * 12))


class _EchoSystemModel(GenericFakeChatModel):
    """Answers with the system part it was sent, and ends as a provider does."""

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content=str(messages[0].content)))
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata={"finish_reason": "stop"})
        )


async def test_an_answer_run_is_written_with_the_version_its_request_was_checked_on(
    prompts_dir: Path,
) -> None:
    library = PromptLibrary.load(prompts_dir, "explain")
    writer = AIWriter(_EchoSystemModel(messages=iter(())), library)
    timing = RunTiming(close_seconds=1.0, lease_seconds=3.0, grace_seconds=0.0)
    registry = AnswerRegistry(MemoryAnswerStore(300), writer, timing)
    checked = AnswerRequest("q", "explain", {}, prompt_version=library.find("explain").version)
    # The file changes between the request's check and its answer's start.
    write_atomically(prompts_dir / "explain.toml", prompt_file("New system part."))
    library.reload()

    run = await registry.start(checked, AnswerMeta("rid", "demo", "m", "explain"))
    async with asyncio.timeout(10):
        events = [event async for event in answer_events(registry, run.id, -1)]

    assert "".join(e.text for e in events if isinstance(e, Text)).startswith("You are a concise")
