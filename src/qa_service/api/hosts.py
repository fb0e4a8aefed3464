"""Which `Host` names this service answers for: the guard against DNS rebinding.

A page on evil.example whose name its owner re-points at 127.0.0.1 (DNS
rebinding) is, to the browser, still its own origin: its requests to the
service carry `Host` and `Origin` evil.example and `Sec-Fetch-Site:
same-origin`, so the cross-site check (origins.py) takes them for our own
page's, and the page can start answers and read them. Only `Host` tells: it
names the attacker's domain. So every route refuses a `Host` that is not ours.

Always ours, on any port: `localhost`, and any IP address (`127.0.0.1`,
`[::1]`, a pod's IP). Rebinding needs a name whose DNS the attacker answers;
a browser sends an address as `Host` only for a page it loaded from that very
address and port, which is the service itself. So loopback use, a local proxy
that passes the browser's `Host` on, Docker's HEALTHCHECK and Kubernetes
probes (which send the pod's IP) work with no setting. Any other name, such as
the public name a proxy in front serves, must be listed in QA_ALLOWED_HOSTS:
exactly (`qa.example.com`), as subdomains (`*.example.com`), or `*` for any
(which turns this guard off).

Starlette's TrustedHostMiddleware does the name matching, but it refuses in
plain text (400) before routing, so a refusal could neither take its route's
dialect (JSON, or OpenAI's shape on /v1) nor be counted; and it has no rule
for addresses. Hence this small guard, run as the app's first dependency.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence

from fastapi import Request

from qa_service.config import HOST_NAME
from qa_service.core import errors

# A Host header: a name or IPv4 address, or an IPv6 one in brackets; then a port.
_HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[^:\[\]]+?)\.?(:[0-9]{1,5})?")


def host_name(host_header: str) -> str | None:
    """The name or address a `Host` header names, lower case, without its port or a
    final dot; None when it is not a host at all."""
    match = _HOST.fullmatch(host_header.strip().lower())
    if match is None:
        return None
    name = match["name"]
    return name if name.startswith("[") or HOST_NAME.fullmatch(name) else None


def is_address(name: str) -> bool:
    """Whether `name` is an IP address, which DNS cannot re-point (the docstring says why)."""
    try:
        ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return name.startswith("[") == (":" in name)  # an IPv6 address, bracketed, only


def host_allowed(host_header: str, allowed: Sequence[str]) -> bool:
    """True if the service answers for the `Host` header `host_header`."""
    if "*" in allowed:
        return True
    name = host_name(host_header)
    if name is None:
        return False
    if name == "localhost" or is_address(name):
        return True
    return any(
        name.endswith(pattern[1:]) if pattern.startswith("*.") else name == pattern
        for pattern in allowed
    )


def refuse_other_hosts(allowed: Sequence[str]) -> Callable[[Request], Awaitable[None]]:
    """The dependency every route runs first: 421 `host_not_allowed` for a `Host`
    that is not ours. A request with no `Host` (HTTP/1.0) names no other site."""
    patterns = [pattern.lower() for pattern in allowed]

    async def check_host(request: Request) -> None:
        host = request.headers.get("host")
        if host is not None and not host_allowed(host, patterns):
            raise errors.QAServiceError(errors.HOST_NOT_ALLOWED)

    return check_host
