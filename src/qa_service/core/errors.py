"""The public error catalogue and the exception hierarchy. No SDK imports:
generation/failures.py maps provider and transport failures onto these codes.

    QAServiceError              refused before the stream starts: JSON 4xx/5xx
    ├── InvalidQueryError       query_required, query_too_long, history_too_long
    ├── UnknownPromptError      unknown_prompt, model_not_found
    ├── UnknownScenarioError    unknown_scenario
    ├── NotReadyError           not_ready
    ├── AnswerFailedEarlyError  an answer's error before its first text (the hold)
    └── StoreUnavailableError   store_unavailable (also raised mid-answer by a store)
    UpstreamIncompleteError     the provider ended a stream without a finish reason
    UpstreamStalledError        the provider went quiet for longer than allowed

Public messages are fixed strings chosen here. An exception's own text never
reaches a client or a log line: provider error bodies can echo the request,
and the request carries the API key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class PublicError:
    """What a client is told: a stable code, a safe message, and whether to retry."""

    code: str
    message: str
    retryable: bool
    status: int = 500
    retry_after_seconds: float | None = None

    def as_dict(self) -> dict[str, object]:
        body: dict[str, object] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.retry_after_seconds is not None:
            body["retry_after_seconds"] = self.retry_after_seconds
        return body


class QAServiceError(Exception):
    """A refusal before the stream starts; `public` says what the client sees,
    `headers` what else its response carries (rate-limit state, say)."""

    public: PublicError

    def __init__(self, public: PublicError, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(public.code)
        self.public = public
        self.headers = dict(headers or {})


class InvalidQueryError(QAServiceError):
    pass


class UnknownPromptError(QAServiceError):
    pass


class UnknownScenarioError(QAServiceError):
    pass


class NotReadyError(QAServiceError):
    pass


class AnswerFailedEarlyError(QAServiceError):
    """An answer that ended before its first text, sent as a status, not a stream.
    Already counted as an answer (its outcome is `error`), so not as a refusal."""


class StoreUnavailableError(QAServiceError):
    """The answer store (Redis) cannot be reached, or has lost an answer's log."""

    def __init__(self, public: PublicError | None = None) -> None:
        super().__init__(public or STORE_UNAVAILABLE)


class UpstreamIncompleteError(Exception):
    """The provider closed the stream cleanly but never said the answer was finished."""


class UpstreamStalledError(Exception):
    """The provider sent nothing the answer could use for too long (writer.py)."""


def query_required() -> InvalidQueryError:
    return InvalidQueryError(
        PublicError("query_required", "The query is missing or blank.", False, 422)
    )


def query_too_long(limit: int) -> InvalidQueryError:
    return InvalidQueryError(
        PublicError("query_too_long", f"The query is longer than {limit} characters.", False, 422)
    )


def model_not_found(name: str | None) -> UnknownPromptError:
    """`name` is None when it is not a valid prompt name, and so is not echoed."""
    named = f"The model {name!r} does not exist" if name else "No such model"
    return UnknownPromptError(
        PublicError("model_not_found", f"{named}; GET /v1/models lists them.", False, 404)
    )


def history_too_long(detail: str) -> InvalidQueryError:
    return InvalidQueryError(
        PublicError("history_too_long", f"The history has {detail}.", False, 422)
    )


def unknown_prompt(name: str | None, known: list[str]) -> UnknownPromptError:
    """`name` is None when it is not a valid prompt name, and so is not echoed."""
    # Valid names match [a-z0-9_-], so echoing one cannot inject anything.
    which = f"named {name!r}" if name is not None else "by that name (names use a-z, 0-9, _ and -)"
    return UnknownPromptError(
        PublicError(
            "unknown_prompt",
            f"prompt: there is no prompt {which}. Known prompts: {', '.join(known)}.",
            False,
            422,
        )
    )


def unknown_scenario(known: list[str]) -> UnknownScenarioError:
    """`known`: the provider's scenarios; none but the demo provider's has any."""
    message = "Scenarios exist only on the demo provider."
    if known:
        message += " Known scenarios: " + ", ".join(known) + "."
    return UnknownScenarioError(
        PublicError(
            "unknown_scenario",
            message,
            False,
            422,
        )
    )


def invalid_request(detail: str) -> QAServiceError:
    """`detail` names the field and the problem (see validation.py), never the value."""
    return QAServiceError(
        PublicError("invalid_request", f"The request is malformed: {detail}.", False, 422)
    )


# The catalogue: each error with a fixed message and a code of its own. Each
# registers itself in PUBLIC_ERRORS, which docs/PROTOCOL.md must document
# (tests/unit/test_errors.py), in the order defined here.
_CATALOGUE: list[PublicError] = []


def _catalogued(
    code: str, message: str, retryable: bool, status: int, retry_after_seconds: float | None = None
) -> PublicError:
    public = PublicError(code, message, retryable, status, retry_after_seconds)
    _CATALOGUE.append(public)
    return public


INVALID_REQUEST = _catalogued("invalid_request", "The request is malformed.", False, 422)
# Written by the HTTP protocol itself (server.py), for requests the app never sees.
UNPARSEABLE_REQUEST = _catalogued("bad_http_request", "The request is not valid HTTP.", False, 400)
URL_TOO_LONG = _catalogued(
    "url_too_long",
    "The URL is longer than 65,535 bytes. Send long questions with POST /ai_write "
    '(a JSON body, {"query": "..."}).',
    False,
    414,
)
BODY_TOO_LARGE = _catalogued("body_too_large", "The request body is too large.", False, 413)
UNSUPPORTED_MEDIA_TYPE = _catalogued(
    "unsupported_media_type",
    "Send the body as JSON, with Content-Type: application/json.",
    False,
    415,
)
# 421 Misdirected Request (RFC 9110, 15.5.20): the request names a host this
# server does not answer for. 400 would say the request is malformed; it is not.
HOST_NOT_ALLOWED = _catalogued(
    "host_not_allowed",
    "This service does not answer for that host name; its operator may add it to QA_ALLOWED_HOSTS.",
    False,
    421,
)
CROSS_SITE_REFUSED = _catalogued(
    "cross_site_refused",
    "Pages on other sites may not ask this service; add their origin to QA_CORS_ORIGINS.",
    False,
    403,
)
# One message for every failure (no key, a wrong key, a spent, expired or
# mismatched ticket): a client learns nothing about which keys or tickets exist.
UNAUTHORIZED = _catalogued(
    "unauthorized",
    "An API key is required: send Authorization: Bearer <key>, or a stream ticket.",
    False,
    401,
)
NOT_FOUND = _catalogued("not_found", "No such endpoint.", False, 404)
METHOD_NOT_ALLOWED = _catalogued("method_not_allowed", "Method not allowed.", False, 405)
NOT_READY = _catalogued("not_ready", "The service is starting or stopping.", True, 503)
# A variant of not_ready (its code, another message), so not a catalogue entry of its own.
PROVIDER_NOT_READY = replace(
    NOT_READY, message="The model provider did not answer the readiness probe."
)
INTERNAL = _catalogued("internal_error", "The service failed to answer.", False, 500)
SHUTTING_DOWN = _catalogued(
    "shutting_down", "The service is restarting; ask again to reach another instance.", True, 503
)
CANCELLED = _catalogued("cancelled", "The answer was cancelled.", False, 409)
PRODUCER_LOST = _catalogued(
    "producer_lost", "The instance writing this answer stopped; ask again.", True, 502
)
STORE_UNAVAILABLE = _catalogued(
    "store_unavailable", "The answer store is unavailable; ask again.", True, 503
)
OVER_CAPACITY = _catalogued(
    "over_capacity", "The service is answering all it can; ask again shortly.", True, 503, 1
)
RATE_LIMITED = _catalogued(
    "rate_limited", "Too many requests from this client; wait before asking again.", True, 429
)
TOO_MANY_STREAMS = _catalogued(
    "too_many_streams",
    "This client has as many answers in progress as it may; wait for one to end.",
    True,
    429,
)
# Readers of one answer, or one client's resumes, on one instance (answers/readers.py).
TOO_MANY_READERS = _catalogued(
    "too_many_readers",
    "This answer, or this client, has as many readers here as it may; wait for one to leave.",
    True,
    429,
    1,
)
BUDGET_EXHAUSTED = _catalogued(
    "budget_exhausted", "This client has used its token budget for the period.", True, 429
)
ANSWER_NOT_FOUND = _catalogued(
    "answer_not_found", "No such answer: it never existed or has expired.", False, 404
)
RESPONSE_NOT_FOUND = _catalogued(
    "response_not_found",
    "No such response: it never existed, was not stored, has expired, or is another client's.",
    False,
    404,
)
PREVIOUS_RESPONSE_NOT_FOUND = _catalogued(
    "previous_response_not_found",
    "previous_response_id names no stored response of this client (it never existed, "
    "was not stored, or has expired).",
    False,
    404,
)
RESUME_MISMATCH = _catalogued(
    "resume_mismatch",
    "Last-Event-ID names an answer to a different request; resume with the same "
    "query, prompt and scenario, or drop the header to ask anew.",
    False,
    409,
)
INVALID_LAST_EVENT_ID = _catalogued(
    "invalid_last_event_id",
    "Last-Event-ID must be an event id this service sent: <answer id>:<seq>.",
    False,
    400,
)

UPSTREAM_AUTH = _catalogued(
    "upstream_auth_failed", "The model provider rejected the service's credentials.", False, 502
)
UPSTREAM_RATE_LIMITED = _catalogued(
    "upstream_rate_limited", "The model provider is rate limiting requests.", True, 429
)
UPSTREAM_BAD_REQUEST = _catalogued(
    "upstream_bad_request", "The model provider refused the request.", False, 502
)
UPSTREAM_UNAVAILABLE = _catalogued(
    "upstream_unavailable", "The model provider is unavailable.", True, 503
)
UPSTREAM_TIMEOUT = _catalogued(
    "upstream_timeout", "The model provider did not answer in time.", True, 504
)
UPSTREAM_INTERRUPTED = _catalogued(
    "upstream_interrupted", "The model provider's stream was cut off.", True, 502
)
UPSTREAM_INCOMPLETE = _catalogued(
    "upstream_incomplete", "The model provider ended the answer early.", True, 502
)
UPSTREAM_ERROR = _catalogued(
    "upstream_error", "The model provider reported an error mid-answer.", True, 502
)

# Last in the module: a _catalogued error defined below this line would be missing.
PUBLIC_ERRORS: tuple[PublicError, ...] = tuple(_CATALOGUE)
