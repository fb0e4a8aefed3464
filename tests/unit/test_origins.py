"""Which requests may start a paid answer, by the browser's own headers."""

from __future__ import annotations

import pytest

from qa_service.api.origins import page_may_start_answers

OWN = "https://qa.example.com"
FRONTEND = "https://app.example.com"
SAFARI_15 = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 15_8 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/15.6.6 Mobile/15E148 Safari/604.1"
)


@pytest.mark.parametrize(
    ("headers", "allowed", "expected"),
    [
        ({}, [], True),  # curl, an SDK, another service
        ({"sec-fetch-site": "same-origin"}, [], True),  # our own page
        ({"sec-fetch-site": "none"}, [], True),  # typed in the address bar
        ({"sec-fetch-site": "cross-site"}, [], False),  # <img src> on another site
        ({"sec-fetch-site": "same-site"}, [], False),  # a sibling subdomain
        ({"sec-fetch-site": "cross-site", "origin": FRONTEND}, [], False),
        ({"sec-fetch-site": "cross-site", "origin": FRONTEND}, [FRONTEND], True),  # CORS
        ({"sec-fetch-site": "cross-site", "origin": "null"}, [FRONTEND], False),
        ({"sec-fetch-site": "cross-site", "origin": FRONTEND}, ["*"], True),
        ({"sec-fetch-site": "cross-site"}, ["*"], False),  # no-cors: no origin to check
        ({"origin": FRONTEND}, [], False),  # an older browser, another site
        ({"origin": OWN}, [], True),  # an older browser, our page
        ({"origin": FRONTEND}, [FRONTEND], True),
    ],
)
def test_only_our_pages_and_listed_origins_may_start_answers(
    headers: dict[str, str], allowed: list[str], expected: bool
) -> None:
    assert page_may_start_answers(headers, OWN, allowed) is expected


@pytest.mark.parametrize(
    ("headers", "bare_get", "expected"),
    [
        # A browser without Fetch Metadata: an <img> on any page, or a typed URL.
        ({"user-agent": SAFARI_15}, True, False),
        # Its POST names the page's Origin (our page starts answers that way).
        ({"user-agent": SAFARI_15, "origin": OWN}, False, True),
        # A GET with a key, a ticket or a Last-Event-ID: not what an <img> sends.
        ({"user-agent": SAFARI_15}, False, True),
        # Not a browser: curl, the SDKs.
        ({"user-agent": "curl/8.5.0"}, True, True),
        ({"user-agent": "OpenAI/Python 1.99.0"}, True, True),
        # A browser with Fetch Metadata says where the request came from.
        ({"user-agent": SAFARI_15, "sec-fetch-site": "same-origin"}, True, True),
    ],
)
def test_a_bare_get_from_a_browser_without_fetch_metadata_starts_nothing(
    headers: dict[str, str], bare_get: bool, expected: bool
) -> None:
    assert page_may_start_answers(headers, OWN, [], bare_get=bare_get) is expected
