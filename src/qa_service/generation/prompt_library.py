"""The prompts in force, swapped whole when QA_PROMPTS_DIR changes, and the versions
answers still being written may name.

Start-up is strict (load_prompts: a bad file stops it). A reload is not: a file
that does not parse, or breaks a start-up rule, is refused with one log line and
its last good version stays in force, so a typo in a ConfigMap never takes a
prompt away from the clients that name it. For the same reason a removed file's
prompt stays in force (one log line) until a restart: clients name prompts, and
the default prompt must always be there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from qa_service.generation.prompts import (
    Prompt,
    PromptError,
    check_default,
    load_prompts,
    parse_prompt,
    version_of,
)

log = logging.getLogger(__name__)

# Versions kept per prompt after they leave force, for a request checked on one
# of them whose answer has not started yet (api/asks.py -> AIWriter.stream):
# that gap is a few loop turns, so a handful of edits in it is already absurd.
RETIRED_PER_PROMPT = 8


class PromptVersionGoneError(PromptError):
    """An answer names a version of a prompt that is no longer kept."""


class PromptLibrary:
    """The prompts a request may name, by name; each at the version in force."""

    def __init__(self, prompts: Mapping[str, Prompt], directory: Path | None = None) -> None:
        # One dict, replaced whole: a reader sees the old set or the new one.
        self._in_force: Mapping[str, Prompt] = MappingProxyType(dict(prompts))
        self.directory = directory
        self._retired: dict[str, list[Prompt]] = {}
        # What was already logged, so that a rescan says nothing new twice:
        # a refused file's version, the removed prompts, a missing directory.
        self._refused: dict[str, str] = {}
        self._removed: set[str] = set()
        self._directory_missing = False

    @classmethod
    def load(cls, directory: Path, default: str) -> PromptLibrary:
        """The prompts in `directory`, checked as at start-up (PromptError stops it)."""
        prompts = load_prompts(directory)
        check_default(prompts, default)
        return cls(prompts, directory)

    @property
    def in_force(self) -> Mapping[str, Prompt]:
        return self._in_force

    def names(self) -> list[str]:
        return sorted(self._in_force)

    def get(self, name: str) -> Prompt | None:
        """The prompt `name` at the version in force, or None."""
        return self._in_force.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._in_force

    def find(self, name: str, version: str = "") -> Prompt:
        """`name` at `version` ("": the one in force), in force or recently retired."""
        current = self._in_force.get(name)
        if current is None:
            raise KeyError(name)
        if not version or current.version == version:
            return current
        for prompt in self._retired.get(name, ()):
            if prompt.version == version:
                return prompt
        raise PromptVersionGoneError(f"{name}: version {version} is no longer kept")

    def is_in_force(self, name: str, version: str) -> bool:
        current = self._in_force.get(name)
        return current is not None and current.version == version

    def reload(self) -> list[str]:
        """Read the directory again; the names whose version changed (or that are new).

        Files are re-read by name each time (never by the path an event
        named): a ConfigMap swaps a `..data` symlink, and the `*.toml` links
        then lead to the new files.
        """
        directory = self.directory
        if directory is None:
            return []
        if not directory.is_dir():
            if not self._directory_missing:
                self._directory_missing = True
                log.warning(
                    "prompts directory unreadable; the prompts in force stay",
                    extra={"prompts_dir": str(directory)},
                )
            return []
        self._directory_missing = False
        fresh = dict(self._in_force)
        seen: set[str] = set()
        for path in sorted(directory.glob("*.toml")):
            seen.add(path.stem)
            prompt = self._read(path)
            if prompt is not None:
                fresh[prompt.name] = prompt
        self._note_removed(set(fresh) - seen)
        changed = [name for name, p in fresh.items() if self._in_force.get(name) is not p]
        if changed:
            for name in changed:
                old = self._in_force.get(name)
                if old is not None:
                    kept = [old, *self._retired.get(name, ())]
                    self._retired[name] = kept[:RETIRED_PER_PROMPT]
            self._in_force = MappingProxyType(fresh)
            log.info(
                "prompts reloaded",
                extra={"prompts": {name: fresh[name].version for name in sorted(changed)}},
            )
        return sorted(changed)

    def _read(self, path: Path) -> Prompt | None:
        """The prompt at `path` if it is new or changed and good; None otherwise."""
        name = path.stem
        try:
            content = path.read_bytes()
        except OSError as exc:
            # Gone between the listing and the read (a swap in progress): the
            # next event reads it again.
            self._refuse(path, f"unreadable: {exc.strerror}", version="")
            return None
        version = version_of(content)
        current = self._in_force.get(name)
        if current is not None and current.version == version:
            self._refused.pop(name, None)
            return None
        if self._refused.get(name) == version:
            return None  # refused already, and said so once
        try:
            prompt = parse_prompt(path, content)
        except PromptError as exc:
            # A half-written file fails here too, and is never served: the
            # write's next event brings the whole file.
            self._refuse(path, str(exc).removeprefix(f"{path}: "), version)
            return None
        self._refused.pop(name, None)
        return prompt

    def _refuse(self, path: Path, fault: str, version: str) -> None:
        name = path.stem
        if version and self._refused.get(name) == version:
            return
        self._refused[name] = version
        # The file's name and the fault: never its content.
        log.warning(
            "prompt file refused; its last good version stays in force",
            extra={"file": path.name, "fault": fault},
        )

    def _note_removed(self, removed: set[str]) -> None:
        for name in sorted(removed - self._removed):
            log.warning(
                "prompt file removed; its last version stays in force until a restart",
                extra={"prompt": name},
            )
        self._removed = removed


__all__ = ["RETIRED_PER_PROMPT", "PromptLibrary", "PromptVersionGoneError"]
