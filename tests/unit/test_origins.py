"""Which requests may start a paid answer, by the browser's own headers."""

from __future__ import annotations

import pytest

from qa_service.api.origins import page_may_start_answers

OWN = "https://qa.example.com"
FRONTEND = "https://app.example.com"


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
