"""What a malformed request is told: the field and the problem, never the value.

`invalid_request` used to say only "The request is malformed." (issue 10). A
client needs to know which field is wrong and how, but the request's values
are the user's question and must not come back in a message a proxy or a log
may keep. Field names are echoed only when they look like names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydantic import ValidationError

# A name a client chose (an unknown field or parameter) is echoed only when it
# cannot carry anything but a name: short, and from a plain alphabet.
_ECHOABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_FORM_BODY = re.compile(rb"^[A-Za-z0-9_.%+-]+=")
# A query must hold a character that is not whitespace. The class is the union
# of what Python (str.isspace) and JavaScript (\s) call whitespace, so the same
# pattern in the OpenAPI schema means the same thing to any validator.
NOT_BLANK_PATTERN = r"[^\s\x1c-\x1f\x85\ufeff]"
NOT_BLANK = re.compile(NOT_BLANK_PATTERN)


def named(name: object, fallback: str) -> str:
    """`name` if it is safe to echo, else `fallback`."""
    text = str(name)
    return text if _ECHOABLE_NAME.fullmatch(text) else fallback


def describe_body_error(exc: ValidationError, body: bytes) -> str:
    """`field: problem` for the first fault in a POST body (declared JSON: api/asks.py)."""
    first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    kind = first["type"]
    field = named(first["loc"][0], "a field") if first["loc"] else "body"
    if kind == "json_invalid":
        if not body.strip():
            return 'body: empty; send a JSON object such as {"query": "..."}'
        # A form's body sent as application/json: a common client slip.
        if _FORM_BODY.match(body[:200]):
            return "body: send JSON, not a form"
        return "body: not valid JSON"
    if kind == "model_type":
        return "body: must be a JSON object"
    if kind == "extra_forbidden":
        return f"{field}: unknown field"
    if kind == "string_type":
        return f"{field}: must be a string"
    # Pydantic's messages describe the constraint, not the input.
    return f"{field}: {str(first['msg']).lower()}"


def describe_query_string_error(
    params: Sequence[tuple[str, str]], known: Iterable[str]
) -> str | None:
    """`name: problem` for an unknown or repeated query parameter, else None."""
    allowed = set(known)
    seen: set[str] = set()
    for name, _value in params:
        if name not in allowed:
            return f"{named(name, 'a parameter')}: unknown parameter"
        if name in seen:
            return f"{name}: given more than once"
        seen.add(name)
    return None
