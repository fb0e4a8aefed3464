"""What only start-up knows of the schema: the prompt names, the live limits, the scenarios.

Routes declare everything else where they are defined. Where a declaration
depends on these facts, it holds a marker (`start_up_parameters`) or names a
component that `install_openapi` builds from them (StartUpFacts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qa_service.api.validation import NOT_BLANK_PATTERN

# The key of a marker in an operation's `parameters`, which install_openapi
# replaces with the GET query string's fields.
ASK_QUERY_FIELDS = "x-qa-ask-query-fields"


def start_up_parameters() -> dict[str, bool]:
    """Stands in a route's `parameters` for the ask's fields (query, prompt, scenario)."""
    return {ASK_QUERY_FIELDS: True}


@dataclass(frozen=True, slots=True)
class StartUpFacts:
    max_query_chars: int
    max_history_messages: int
    prompts: list[str]
    # The demo provider's; none on any other.
    scenarios: list[str] = field(default_factory=list)

    def ask_fields(self) -> dict[str, dict[str, Any]]:
        """The schema of each field an ask may name, in the query string or a body."""
        fields: dict[str, dict[str, Any]] = {
            "query": {
                "type": "string",
                "minLength": 1,
                "maxLength": self.max_query_chars,
                "pattern": NOT_BLANK_PATTERN,
                "description": "The question, passed to the model exactly as sent; not blank.",
            },
            "prompt": {
                "type": "string",
                "enum": sorted(self.prompts),
                "description": "A prompt from GET /prompts; without it, the default prompt.",
            },
        }
        if self.scenarios:
            fields["scenario"] = {
                "type": "string",
                "enum": list(self.scenarios),
                "description": "A demo scenario (offered by the demo provider only).",
            }
        return fields

    def query_parameters(self) -> list[dict[str, Any]]:
        return [
            {"name": name, "in": "query", "required": name == "query", "schema": schema}
            for name, schema in self.ask_fields().items()
        ]

    def history_field(self) -> dict[str, Any]:
        return {
            "type": ["array", "null"],
            "maxItems": self.max_history_messages,
            "description": "The conversation so far, oldest first (POST only); the new "
            "question stays in `query`. Trimmed to QA_MAX_HISTORY_TOKENS.",
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": ["user", "assistant"]},
                    "content": {"type": "string"},
                },
                "required": ["role", "content"],
                "additionalProperties": False,
            },
        }


def or_null(field: dict[str, Any]) -> dict[str, Any]:
    """An enum field that a JSON null may also fill (the same as leaving it out)."""
    return {**field, "type": ["string", "null"], "enum": [*field["enum"], None]}
