"""Loads and validates the answer prompts in `prompts/`; start-up fails fast on a bad one."""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from qa_service.generation.history import HISTORY_VARIABLE

QUERY_VARIABLE = "concept"
PROMPT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class PromptError(Exception):
    """A prompt file that cannot be used; the message names the file and the fault,
    never the file's content."""


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    description: str
    template: ChatPromptTemplate
    # version_of(the file's bytes): in meta, GET /prompts and the answer's log line.
    version: str = ""


def version_of(content: bytes) -> str:
    """A prompt's version: the first 12 hex digits of the sha256 of its file's bytes.

    Content, not mtime: every replica reading the same file (a ConfigMap)
    names the same version, and a touch without an edit is no new version.
    """
    return hashlib.sha256(content).hexdigest()[:12]


def load_prompts(directory: Path) -> dict[str, Prompt]:
    """Every `*.toml` prompt in `directory`, by name (the file's stem)."""
    if not directory.is_dir():
        raise PromptError(f"{directory}: prompts directory not found")
    prompts = {path.stem: load_prompt(path) for path in sorted(directory.glob("*.toml"))}
    if not prompts:
        raise PromptError(f"{directory}: no *.toml prompt files")
    return prompts


def load_prompt(path: Path) -> Prompt:
    """One prompt file: a `system` part, a `user` part with {concept}, a `description`.

    The conversation's earlier turns go between the two: every prompt can
    answer a follow-up, and the system part always comes first, whatever the
    history holds.
    """
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise PromptError(f"{path}: unreadable: {exc.strerror}") from None
    return parse_prompt(path, content)


def parse_prompt(path: Path, content: bytes) -> Prompt:
    """The prompt `content` (read from `path`) holds, checked as at start-up."""
    name = path.stem
    if not PROMPT_NAME.fullmatch(name):
        raise PromptError(f"{path}: name must match {PROMPT_NAME.pattern}")
    try:
        raw = tomllib.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PromptError(f"{path}: unreadable: {exc}") from None
    system = _required_text(path, raw, "system")
    user = _required_text(path, raw, "user")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise PromptError(f"{path}: 'description' must be a string")
    unknown = set(raw) - {"system", "user", "description"}
    if unknown:
        raise PromptError(f"{path}: unknown keys {sorted(unknown)}")
    try:
        template = ChatPromptTemplate.from_messages(
            [
                ("system", system),
                MessagesPlaceholder(HISTORY_VARIABLE, optional=True),
                ("human", user),
            ]
        )
    except (ValueError, KeyError) as exc:
        raise PromptError(f"{path}: invalid template: {exc}") from None
    variables = set(template.input_variables)
    if variables != {QUERY_VARIABLE}:
        raise PromptError(
            f"{path}: templates must use exactly the variable {{{QUERY_VARIABLE}}}, "
            f"found {sorted(variables) or 'none'}"
        )
    if QUERY_VARIABLE not in _variables_of(user):
        raise PromptError(f"{path}: the 'user' part must contain {{{QUERY_VARIABLE}}}")
    return Prompt(
        name=name, description=description, template=template, version=version_of(content)
    )


def check_default(prompts: Mapping[str, Prompt], default: str) -> None:
    if default not in prompts:
        raise PromptError(
            f"QA_DEFAULT_PROMPT: no prompt named {default!r} (have {', '.join(sorted(prompts))})"
        )


def _required_text(path: Path, raw: dict[str, object], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PromptError(f"{path}: '{key}' must be a non-empty string")
    return value


def _variables_of(text: str) -> set[str]:
    return set(ChatPromptTemplate.from_messages([("human", text)]).input_variables)
