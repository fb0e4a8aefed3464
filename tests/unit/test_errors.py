from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import groq
import httpx
import openai
import pytest

from qa_service.core import errors
from qa_service.generation.failures import classify_failure
from qa_service.generation.upstream import retry_after_seconds

REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


def _status_error(sdk: object, status: int, headers: dict[str, str] | None = None) -> Exception:
    response = httpx.Response(status, headers=headers, request=REQUEST, json={"error": {}})
    return sdk.APIStatusError("secret-bearing message", response=response, body=None)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("sdk", [openai, groq])
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "upstream_bad_request"),
        (401, "upstream_auth_failed"),
        (403, "upstream_auth_failed"),
        (404, "upstream_bad_request"),
        (408, "upstream_unavailable"),
        (409, "upstream_unavailable"),  # the SDKs retry a 409 too: it is transient
        (422, "upstream_bad_request"),
        (429, "upstream_rate_limited"),
        (500, "upstream_unavailable"),
        (529, "upstream_unavailable"),
    ],
)
def test_provider_statuses_map_to_stable_codes(sdk: object, status: int, code: str) -> None:
    public = classify_failure(_status_error(sdk, status))
    assert public.code == code
    assert "secret" not in public.message


def test_retry_after_is_passed_on_when_it_is_a_number() -> None:
    assert (
        classify_failure(_status_error(openai, 429, {"retry-after": "3"})).retry_after_seconds == 3
    )
    assert classify_failure(_status_error(groq, 503, {"retry-after": "2"})).retry_after_seconds == 2


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = classify_failure(_status_error(openai, 429, {"retry-after": soon}))
    assert seconds.retry_after_seconds is not None
    assert 25 < seconds.retry_after_seconds <= 30
    past = _status_error(openai, 429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert classify_failure(past).retry_after_seconds is None


def test_retry_after_ms_wins_over_retry_after_as_the_sdks_read_it() -> None:
    headers = httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})
    assert retry_after_seconds(headers) == 1.5


@pytest.mark.parametrize("raw", ["-1", "nan", "inf", "-inf", "soon", "", "86400"])
def test_a_retry_after_that_is_not_a_sane_wait_is_not_passed_on(raw: str) -> None:
    public = classify_failure(_status_error(openai, 429, {"retry-after": raw}))
    assert public.code == "upstream_rate_limited"
    assert public.retry_after_seconds is None
    assert "NaN" not in json.dumps(public.as_dict())


def _wrapped(outer: Exception, cause: Exception) -> Exception:
    """`outer` raised from `cause`, the way the SDKs wrap transport errors."""
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (httpx.RemoteProtocolError("peer closed"), "upstream_interrupted"),
        (
            _wrapped(openai.APIConnectionError(request=REQUEST), httpx.ReadError("reset")),
            "upstream_interrupted",
        ),
        (
            _wrapped(openai.APIConnectionError(request=REQUEST), httpx.ConnectError("refused")),
            "upstream_unavailable",
        ),
        (openai.APITimeoutError(request=REQUEST), "upstream_timeout"),
        (groq.APITimeoutError(request=REQUEST), "upstream_timeout"),
        (httpx.ReadTimeout("slow"), "upstream_timeout"),
        # Our own connection pool at its bound: not the provider's doing.
        (
            _wrapped(openai.APITimeoutError(request=REQUEST), httpx.PoolTimeout("full")),
            "over_capacity",
        ),
        (
            _wrapped(groq.APITimeoutError(request=REQUEST), httpx.PoolTimeout("full")),
            "over_capacity",
        ),
        (openai.APIError("in-stream error", request=REQUEST, body=None), "upstream_error"),
        (errors.UpstreamIncompleteError(), "upstream_incomplete"),
        (RuntimeError("a bug"), "internal_error"),
    ],
)
def test_transport_failures_are_classified_by_their_root_cause(
    failure: Exception, code: str
) -> None:
    assert classify_failure(failure).code == code


def test_every_public_code_is_unique_and_documented() -> None:
    codes = [public.code for public in errors.PUBLIC_ERRORS]
    assert len(codes) == len(set(codes))
    protocol = (
        __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
    ).read_text()
    for code in [*codes, "query_required", "query_too_long", "unknown_prompt", "unknown_scenario"]:
        assert f"`{code}`" in protocol, code


def test_no_public_error_constant_escapes_the_catalogue() -> None:
    """One made with PublicError(...), not _catalogued(...), would miss the test above."""
    catalogued = {public.code for public in errors.PUBLIC_ERRORS}
    constants = {n: v for n, v in vars(errors).items() if isinstance(v, errors.PublicError)}

    # A variant of a catalogued error (PROVIDER_NOT_READY) keeps its code, so passes.
    assert {n: v.code for n, v in constants.items() if v.code not in catalogued} == {}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),  # unreadable ms: fall back
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"}, None),  # naive date, past
        ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, "far"),
        ({"retry-after": "1e400"}, None),
        ({}, None),
    ],
)
def test_the_retry_after_parser_never_raises(
    headers: dict[str, str], expected: float | str | None
) -> None:
    seconds = retry_after_seconds(httpx.Headers(headers))
    if expected == "far":
        assert seconds is not None
        assert seconds > 86400
    else:
        assert seconds == expected
