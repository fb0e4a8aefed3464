"""Every relative link in the README, docs/ and benchmarks/README.md resolves.

A link's file must exist, and its `#anchor`, in a Markdown file, must name a
heading there by GitHub's rules (or an `<a id>`/`<a name>`). Links with a
scheme (https:, mailto:) are not followed; links inside code are not links.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").rglob("*.md")]
)

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target), with an optional "title"; one level of
# brackets inside the text, for an image inside a link.
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)"
)
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*?(?:id|name)=[\"']([^\"']+)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
        elif fence is not None:
            if line.strip().startswith(fence[0] * len(fence)):
                fence = None
        else:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower case, punctuation
    dropped but for `-` and `_`, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a link into `page` may name; repeated headings get -1, -2, ..."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = page.read_text(encoding="utf-8")
    for line in prose_lines(text):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    found.update(HTML_ANCHOR.findall(text))
    return found


def link_targets(page: Path) -> list[str]:
    targets: list[str] = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub("", line)
        reference = REFERENCE_LINK.match(line)
        found = [reference.group(1)] if reference else INLINE_LINK.findall(line)
        targets += [target.strip("<>") for target in found]
    return targets


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of `page` whose file or anchor does not exist."""
    broken: list[str] = []
    for target in link_targets(page):
        if SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if not path_part:
            resolved = page
        elif path_part.startswith("/"):
            resolved = root / path_part.lstrip("/")
        else:
            resolved = (page.parent / path_part).resolve()
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
            broken.append(f"{target}: no such heading in {resolved.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_pages_are_read_and_their_links_found() -> None:
    assert {ROOT / "README.md", ROOT / "docs" / "PROTOCOL.md"} <= set(PAGES)
    assert any("#" in target for target in link_targets(ROOT / "README.md"))


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("The Vercel AI SDK dialect: `POST /api/chat`", "the-vercel-ai-sdk-dialect-post-apichat"),
        ("`QA_FALLBACK_PROVIDER`", "qa_fallback_provider"),
        ("Resuming: `GET /api/chat/{id}/stream`", "resuming-get-apichatidstream"),
        ("`qa-service ask`", "qa-service-ask"),
        ("Who wins a race", "who-wins-a-race"),
    ],
)
def test_anchors_follow_githubs_rules(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_missing_file_or_heading_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Same\n\n## Same\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#same-1) [self](#page) [web](https://example.com/x.md)\n"
        "`[in code](gone.md)`\n\n```\n[in a block](gone.md)\n```\n"
        "[gone](gone.md) [no heading](other.md#same-2) ![image](missing.png)\n"
        "[ref]: ./also-gone.md\n"
    )
    assert broken_links(page, tmp_path) == [
        "gone.md: no such file",
        "other.md#same-2: no such heading in other.md",
        "missing.png: no such file",
        "./also-gone.md: no such file",
    ]
