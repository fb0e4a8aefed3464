"""API keys: who may start an answer, known only by the sha256 digests of their keys.

Keys come from QA_API_KEYS (raw keys, comma-separated) and QA_API_KEYS_FILE,
which holds hashes only, one a line:

    # comments and blank lines are ignored
    sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 alice
    sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752

A line is `sha256:<64 hex digits>`, then optionally a label (1 to 64 of
A-Z a-z 0-9 . _ -). `qa-service hash-key` prints such a line for a key.

A presented key is hashed and looked up by its digest: the service never
compares raw keys, and the file never holds one. Each key has a client id,
stable and not secret, that limits and logs may use: `key:<label>` for a
labelled line, otherwise `key:` and the first 16 hex digits of the digest.
Two lines with the same label are one client (an old and a new key during a
rotation share one client's limits).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from qa_service.config import ConfigError, Settings

HASH_PREFIX = "sha256:"
LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LINE = re.compile(r"sha256:(?P<digest>[0-9a-f]{64})(?:\s+(?P<label>\S+))?")
_BEARER = re.compile(r"Bearer +(?P<token>\S+) *", re.IGNORECASE)


def key_digest(key: str) -> str:
    """The sha256 of a key, in hex: how the service knows a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def hashed_key_line(key: str, label: str | None = None) -> str:
    """A line for QA_API_KEYS_FILE that admits `key` (under `label`, if given)."""
    line = HASH_PREFIX + key_digest(key)
    return f"{line} {label}" if label else line


def client_id(digest: str, label: str | None = None) -> str:
    """The stable, non-secret name of a key's client (the module docstring says which)."""
    return f"key:{label}" if label else f"key:{digest[:16]}"


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    match = _BEARER.fullmatch(authorization)
    return match["token"] if match else None


class KeyRing:
    """The keys that may start answers, by digest."""

    def __init__(self, clients: Mapping[str, str]) -> None:
        self._clients = dict(clients)  # digest -> client id

    def __len__(self) -> int:
        return len(self._clients)

    def identify(self, key: str) -> str | None:
        """The client id of `key`, or None for a key this service does not know."""
        return self.client_of(key_digest(key))

    def client_of(self, digest: str) -> str | None:
        """The client id of the key with this digest, or None when no key listed has it
        (never listed, or removed since: a ticket it bought is then refused)."""
        return self._clients.get(digest)


def parse_key_file(lines: Iterable[str]) -> dict[str, str | None]:
    """{digest: label or None} from a keys file's lines.

    A ValueError names the line by its number and never repeats its text: a
    raw key pasted by mistake must not end up in a start-up message.
    """
    keys: dict[str, str | None] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ValueError(
                f"line {number}: expected sha256:<64 lowercase hex digits> and an optional "
                "label; make one with `qa-service hash-key`"
            )
        if match["label"] is not None and not LABEL.fullmatch(match["label"]):
            raise ValueError(f"line {number}: a label takes 1 to 64 of A-Z a-z 0-9 . _ -")
        if match["digest"] in keys:
            raise ValueError(f"line {number}: the same key is listed twice")
        keys[match["digest"]] = match["label"]
    return keys


def load_key_ring(settings: Settings) -> KeyRing | None:
    """The keys from QA_API_KEYS and QA_API_KEYS_FILE; None when neither is set (no auth).

    Raises ConfigError for a file that cannot be read or parsed, or that admits no key.
    """
    if not settings.auth_enabled:
        return None
    clients: dict[str, str] = {}
    for key in settings.api_keys:
        digest = key_digest(key.get_secret_value())
        clients[digest] = client_id(digest)
    path = settings.api_keys_file
    if path is not None:
        for digest, label in _read_key_file(path).items():
            clients[digest] = client_id(digest, label)
    if not clients:
        raise ConfigError("QA_API_KEYS_FILE: the file lists no key, so no request could start")
    return KeyRing(clients)


def _read_key_file(path: Path) -> dict[str, str | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"QA_API_KEYS_FILE: cannot read {path} ({type(exc).__name__})") from None
    try:
        return parse_key_file(text.splitlines())
    except ValueError as exc:
        raise ConfigError(f"QA_API_KEYS_FILE: {path}: {exc}") from None
