"""Loaded at start-up by a Python process whose PYTHONPATH names this directory
(tests/support/outbound.py): writes every outbound socket attempt to the file
OUTBOUND_AUDIT_FILE names, one JSON line each.

Python's audit hooks (PEP 578) see every `socket.connect`, `getaddrinfo` and
`sendto` made through the socket module, whichever library makes it; not the
connections uvloop makes in C (see tests/support/outbound.py).
"""

import json
import os
import sys

_PATH = os.environ.get("OUTBOUND_AUDIT_FILE")
_WATCHED = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto"}


def _install(path: str) -> None:
    # Opened once, line-buffered: opening it in the hook would raise an audit
    # event of its own, and a line must be on disk when the process is killed.
    out = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event not in _WATCHED:
            return
        # A connect or send: the address; a lookup: its (host, port).
        target = args[:2] if event.startswith("socket.get") else args[-1]
        out.write(json.dumps({"event": event, "target": repr(target)}) + "\n")

    sys.addaudithook(hook)
    # The first line says the hook is in place: an empty file would prove nothing.
    out.write(json.dumps({"event": "installed", "target": repr(os.getpid())}) + "\n")


if _PATH:
    _install(_PATH)
