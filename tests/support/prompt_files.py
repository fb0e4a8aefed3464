"""Prompt files written by tests: a valid one with a given system part, and writes as
deploy tools make them."""

from __future__ import annotations

import os
from pathlib import Path


def prompt_file(system: str) -> str:
    """A valid prompt file whose system part is `system` (plain text, no quotes)."""
    return f'description = "d"\nsystem = "{system}"\nuser = "Explain: {{concept}}"\n'


def write_atomically(path: Path, content: str) -> None:
    """As an editor or a deploy tool writes: the file is never seen half-written."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(content)
    os.replace(temporary, path)
