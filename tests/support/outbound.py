"""Every outbound socket attempt of a service process, as its audit hook wrote them.

`audit_settings(path)` goes into the service's settings: it puts
tests/support/outbound_hook on the PYTHONPATH, whose sitecustomize.py
installs the hook before anything of the service is imported. What it sees:
every connect, name lookup and UDP send made through Python's socket module,
so requests, urllib3, httpx's sync client and the OpenTelemetry exporters'
threads. What it does not see: sockets uvloop opens in C (the service's event
loop, so httpx's async client); those honour the proxy variables, which
tests/support/recording_proxy.py catches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HOOK_DIR = Path(__file__).resolve().parent / "outbound_hook"


@dataclass(frozen=True)
class Attempt:
    event: str  # "socket.connect", "socket.getaddrinfo", ...
    target: str  # repr of the address: "('127.0.0.1', 4318)", "'/run/x.sock'"


def audit_settings(path: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(HOOK_DIR), "OUTBOUND_AUDIT_FILE": str(path)}


def read_attempts(path: Path) -> list[Attempt]:
    """The attempts recorded; fails if the hook was never installed."""
    lines = path.read_text().splitlines() if path.exists() else []
    records = [Attempt(**json.loads(line)) for line in lines if line]
    if not records or records[0].event != "installed":
        raise AssertionError(f"no audit hook ran: {path}")
    return records[1:]
