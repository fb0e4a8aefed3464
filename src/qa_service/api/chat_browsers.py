"""Which browser a `useChat` chat belongs to: the resume cookie of the AI SDK dialect.

A chat is found again by (client, chat id), and a client is an API key, or
an address when keys are off (api/deps.py client_of): usually a whole app's
users, or everyone behind one office's NAT. Any of them who learnt a chat id
could resume its answer from the start (issue 20). So the POST that starts a
chat's answer hands the browser an opaque token in a cookie, and the chat is
remembered under (client, token, chat id): only the browser that posted it,
bringing the cookie back, resumes it. A browser keeps one token for all its
chats, refreshed by each POST, so cookies do not pile up.

Why a cookie, not an end-user id signed by the app's backend: `useChat` and
the app's own proxy of /api/chat carry it with no code (a browser sends it by
itself, same-origin, to the path the SDK uses by default), while a signed id
would need a shared secret and code in every app, and nothing for an app
without a backend.

The cookie: HttpOnly (a page's scripts never need it), SameSite=Strict (the
resume is a fetch from the app's own page; a link from another site never
needs it), Path=/api/chat (sent with chat requests only), Secure when the
request came over https (uvicorn takes X-Forwarded-Proto from
QA_FORWARDED_ALLOW_IPS' proxies), Max-Age the time an answer can be resumed.
"""

from __future__ import annotations

import re
import secrets

from fastapi import Request
from fastapi.responses import Response

COOKIE = "qa_chat"
COOKIE_PATH = "/api/chat"
# 24 random bytes, base64url: 32 characters. A cookie of any other shape is
# not one of ours, and a new token replaces it.
TOKEN_BYTES = 24
TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


def browser_of(request: Request) -> str | None:
    """The token the browser brought, if it is one of the shape this module gives."""
    token = request.cookies.get(COOKIE)
    return token if token is not None and TOKEN.fullmatch(token) else None


def new_browser_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def give_browser_token(request: Request, response: Response, token: str, seconds: int) -> None:
    """Set (or refresh) the browser's token on a chat's response."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=seconds,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
