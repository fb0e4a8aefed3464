"""The metric names and label matchers a PromQL expression uses, read with a few regexes.

promtool parses PromQL but has no command that lists an expression's metrics,
so this strips what cannot be a metric name and keeps the rest: string
literals (label values, Grafana's `$variables` inside them), ranges and
subqueries (`[5m]`, `[$__rate_interval]`), the label lists of `by`, `without`,
`on`, `ignoring`, `group_left` and `group_right`, then every identifier
followed by `(` (a function or an aggregation) and the keywords. Numbers and
durations (`0.95`, `1e3`, `15m`) never start an identifier. A metric named in
`{__name__=...}` is not seen: the queries here do not use that form.
"""

from __future__ import annotations

import re

KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_BRACES = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
# Not after a word character, a dot or a `$`: so not inside a number, a
# duration or a Grafana variable.
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects."""
    text = _without_strings(expr)
    text = _BRACES.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    return {
        match.group(1)
        for match in _IDENTIFIER.finditer(text)
        if match.group(2) is None and match.group(1).lower() not in KEYWORDS
    }


def label_matchers(expr: str) -> set[tuple[str, str]]:
    """Every (metric name, label name) pair of a matcher such as `qa_requests_total{code="x"}`."""
    text = _without_strings(expr)
    return {
        (selector.group(1), matcher.group(1))
        for selector in _SELECTOR.finditer(text)
        for matcher in _MATCHER.finditer(selector.group(2))
    }
