"""Which browser pages may start an answer: this service's own, and QA_CORS_ORIGINS.

CORS only stops a page from reading a response; it does not stop the request.
A GET needs no preflight, so without this check any page on any site could
start a paid answer through its visitors' browsers (`<img src=".../ai_write?
query=...">`, `fetch(url, {mode: "no-cors"})`). The POST route also requires
JSON, which forces a preflight; this covers both, from the browsers' own
Fetch Metadata and Origin headers. Clients that are not browsers (curl, the
SDKs, other services) send neither and are not affected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Sec-Fetch-Site values from a request the user's own page (or address bar) made.
_OWN_SITE = frozenset({"same-origin", "none"})
# Every browser's User-Agent, and no SDK's or command-line tool's.
_BROWSER = "Mozilla/"


def page_may_start_answers(
    headers: Mapping[str, str],
    own_origin: str,
    allowed: Sequence[str],
    *,
    bare_get: bool = False,
) -> bool:
    """True unless a browser sent this request for a page of a site we do not serve.

    `bare_get`: a GET that names no credential (key or ticket) and resumes
    nothing (no Last-Event-ID), the only kind an `<img>` can send.
    """
    origin = headers.get("origin")
    listed = origin is not None and ("*" in allowed or origin in allowed)
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in _OWN_SITE or listed
    if origin is None and bare_get and _BROWSER in headers.get("user-agent", ""):
        # A browser without Fetch Metadata (Safari before 16.4, Chrome before
        # 76, Firefox before 90) names no Origin on a GET, from our page or
        # from an `<img>` on any other: with keys off, any site could start
        # paid answers nobody reads. Our page starts answers with a POST,
        # which names its Origin, so only a typed-in URL is refused with it.
        return False
    # A browser without Fetch Metadata still names the page's origin on
    # cross-origin requests; other clients name none.
    return origin is None or origin == own_origin or listed
