"""Loads and validates the answer prompts in `prompts/` at start-up; fails fast."""

from __future__ import annotations

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
    """A prompt file that cannot be used; the message names the file and the fault."""


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    description: str
    template: ChatPromptTemplate


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
    name = path.stem
    if not PROMPT_NAME.fullmatch(name):
        raise PromptError(f"{path}: name must match {PROMPT_NAME.pattern}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
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
    return Prompt(name=name, description=description, template=template)


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
