"""API keys (parsing, hashing, client ids) and stream tickets (single use, expiry, binding)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from fastapi import Request
from starlette.testclient import TestClient

from qa_service.access.keys import KeyRing, bearer_token, load_key_ring, parse_key_file
from qa_service.access.tickets import Redeemed, StreamTickets, TicketRefusal
from qa_service.answers.model import AnswerRequest
from qa_service.api.deps import CLIENT_KEY_ID
from qa_service.api.guards import STARTS_ANSWERS
from qa_service.app import create_app
from qa_service.cli import main
from qa_service.config import ConfigError, Settings, load_settings
from qa_service.stores.memory_values import MemoryValues
from tests.support.in_process import LOOPBACK

KEY = "k-" + "a1" * 12
OTHER = "k-" + "b2" * 12


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, provider="demo", **values)  # type: ignore[call-arg]


def test_the_keys_file_takes_hashes_labels_comments_and_blank_lines() -> None:
    lines = [
        "# issued 2026-11",
        "",
        f"sha256:{sha(KEY)} team-a   # a comment after a label",
        f"  sha256:{sha(OTHER)}  ",
    ]
    assert parse_key_file(lines) == {sha(KEY): "team-a", sha(OTHER): None}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (KEY, "expected sha256:"),  # a raw key pasted by mistake
        (f"sha256:{sha(KEY).upper()}", "expected sha256:"),
        (f"sha256:{sha(KEY)[:-1]}", "expected sha256:"),
        (f"md5:{sha(KEY)}", "expected sha256:"),
        (f"sha256:{sha(KEY)} two words", "expected sha256:"),
        (f"sha256:{sha(KEY)} bad/label", "a label takes"),
    ],
)
def test_a_bad_line_is_named_by_number_and_never_echoed(line: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse_key_file(["# first", line])
    assert str(caught.value).startswith("line 2:")
    assert KEY not in str(caught.value)
    assert sha(KEY) not in str(caught.value)


def test_a_key_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="line 2: the same key is listed twice"):
        parse_key_file([f"sha256:{sha(KEY)} a", f"sha256:{sha(KEY)} b"])


def test_keys_from_the_variable_and_the_file_get_stable_non_secret_client_ids(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"sha256:{sha(OTHER)} team-a\n")
    ring = load_key_ring(settings(api_keys=KEY, api_keys_file=path))
    assert ring is not None
    assert ring.identify(KEY) == f"key:{sha(KEY)[:16]}"
    assert ring.identify(OTHER) == "key:team-a"
    assert ring.identify(KEY + "x") is None
    assert ring.identify(sha(KEY)) is None  # the digest is not a key


def test_two_keys_under_one_label_are_one_client(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"sha256:{sha(KEY)} rotating\nsha256:{sha(OTHER)} rotating\n")
    ring = load_key_ring(settings(api_keys_file=path))
    assert ring is not None
    assert ring.identify(KEY) == ring.identify(OTHER) == "key:rotating"


def test_without_keys_there_is_no_key_ring() -> None:
    assert load_key_ring(settings()) is None
    assert load_key_ring(settings(api_keys=" , ")) is None


@pytest.mark.parametrize("content", [None, "# only a comment\n", "not a hash\n"])
def test_a_keys_file_that_admits_nobody_stops_start_up(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=r"^QA_API_KEYS_FILE: "):
        load_key_ring(settings(api_keys_file=path))


def test_api_keys_are_split_and_scrubbed_from_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_API_KEYS", f" {KEY} ,{OTHER},")
    loaded = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [key.get_secret_value() for key in loaded.api_keys] == [KEY, OTHER]
    assert {KEY, OTHER} <= set(loaded.secret_values())
    assert loaded.auth_enabled
    assert KEY not in repr(loaded)


@pytest.mark.parametrize(
    ("keys", "problem"),
    [("short-key", "at least 16"), ("white space in the key", "may hold only")],
)
def test_a_weak_or_unsendable_key_stops_start_up_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, keys: str, problem: str
) -> None:
    monkeypatch.setenv("QA_API_KEYS", f"{KEY},{keys}")
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    with pytest.raises(ConfigError, match=f"^QA_API_KEYS: .*{problem}") as caught:
        load_settings(runnable=False)
    assert keys not in str(caught.value)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (f"Bearer {KEY}", KEY),
        (f"bearer  {KEY}", KEY),
        (f"Basic {KEY}", None),
        ("Bearer", None),
        ("Bearer ", None),
        (f"Bearer {KEY} extra", None),
        (KEY, None),
        # Python's `$` matches before a final newline; these patterns match whole strings.
        (f"Bearer {KEY}\n", None),
    ],
)
def test_bearer_tokens_are_read_from_the_authorization_header(
    header: str, token: str | None
) -> None:
    assert bearer_token(header) == token


def test_hash_key_prints_the_files_line_for_a_key_on_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    assert main(["hash-key", "--label", "team-a"]) == 0
    out = capsys.readouterr().out
    assert out == f"sha256:{sha(KEY)} team-a\n"
    assert parse_key_file(out.splitlines()) == {sha(KEY): "team-a"}


def test_hash_key_refuses_a_label_with_a_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    assert main(["hash-key", "--label", "team-a\n"]) == 2
    assert capsys.readouterr().out == ""


def test_hash_key_refuses_a_short_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["hash-key"]) == 2
    assert capsys.readouterr().out == ""


REQUEST = AnswerRequest("what is light?", "explain", {})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_ticket_is_redeemed_once_for_its_client() -> None:
    tickets = StreamTickets(MemoryValues(), 60)
    ring = KeyRing({sha(KEY): "key:team-a"})
    ticket = await tickets.issue(sha(KEY), REQUEST)
    assert await tickets.redeem(ticket, REQUEST, ring) == Redeemed("key:team-a")
    assert await tickets.redeem(ticket, REQUEST, ring) is TicketRefusal.UNKNOWN


async def test_a_ticket_is_refused_once_its_key_is_no_longer_listed() -> None:
    tickets = StreamTickets(MemoryValues(), 60)
    ticket = await tickets.issue(sha(KEY), REQUEST)
    without_it = KeyRing({sha(OTHER): "key:team-b"})
    assert await tickets.redeem(ticket, REQUEST, without_it) is TicketRefusal.KEY_REMOVED
    # Spent all the same: listing the key again does not bring the ticket back.
    again = KeyRing({sha(KEY): "key:team-a"})
    assert await tickets.redeem(ticket, REQUEST, again) is TicketRefusal.UNKNOWN


async def test_a_ticket_counts_against_its_keys_client_as_listed_when_used() -> None:
    tickets = StreamTickets(MemoryValues(), 60)
    ticket = await tickets.issue(sha(KEY), REQUEST)
    relabelled = KeyRing({sha(KEY): "key:team-c"})
    assert await tickets.redeem(ticket, REQUEST, relabelled) == Redeemed("key:team-c")


@pytest.mark.parametrize(
    "other",
    [
        AnswerRequest("what is light??", "explain", {}),
        AnswerRequest("what is light?", "eli5", {}),
        AnswerRequest("what is light?", "explain", {"scenario": "normal"}),
    ],
)
async def test_a_ticket_for_another_request_is_refused_and_spent(other: AnswerRequest) -> None:
    tickets = StreamTickets(MemoryValues(), 60)
    ticket = await tickets.issue("", REQUEST)
    assert await tickets.redeem(ticket, other, None) is TicketRefusal.MISMATCH
    assert await tickets.redeem(ticket, REQUEST, None) is TicketRefusal.UNKNOWN


async def test_a_ticket_expires_after_its_ttl() -> None:
    clock = Clock()
    tickets = StreamTickets(MemoryValues(clock), 60)
    in_time = await tickets.issue("", REQUEST)
    late = await tickets.issue("", REQUEST)
    clock.now += 59.9
    assert await tickets.redeem(in_time, REQUEST, None) == Redeemed("")
    clock.now += 0.1
    assert await tickets.redeem(late, REQUEST, None) is TicketRefusal.UNKNOWN


async def test_expired_tickets_are_swept_so_memory_stays_bounded() -> None:
    clock = Clock()
    store = MemoryValues(clock)
    tickets = StreamTickets(store, 60)
    for _ in range(100):
        await tickets.issue("", REQUEST)
    clock.now += 61
    await tickets.issue("", REQUEST)
    assert len(store) == 1


async def test_the_store_holds_digests_not_tickets() -> None:
    store = MemoryValues()
    ticket = await StreamTickets(store, 60).issue(sha(KEY), REQUEST)
    assert await store.take(ticket) is None
    assert await store.take(sha(ticket)) is not None


@pytest.mark.parametrize("ticket", ["", "x" * 42, "x" * 44, "x" * 42 + "!", "x" * 43 + "\n"])
async def test_a_ticket_of_the_wrong_shape_is_refused_without_a_lookup(ticket: str) -> None:
    class NoLookups(MemoryValues):
        async def take(self, digest: str) -> str | None:
            raise AssertionError("looked up")

    assert (
        await StreamTickets(NoLookups(), 60).redeem(ticket, REQUEST, None) is TicketRefusal.UNKNOWN
    )


def test_the_key_check_names_the_client_for_the_checks_after_it() -> None:
    """The contract with per-client limits: request.state.client_key_id."""
    app = create_app(settings(api_keys=KEY))
    seen: list[object] = []

    async def whoami(request: Request) -> dict[str, str]:
        seen.append(getattr(request.state, CLIENT_KEY_ID, None))
        return {}

    app.add_api_route("/ai_write_probe", whoami, methods=["POST"], dependencies=STARTS_ANSWERS)
    with TestClient(app, base_url=LOOPBACK) as client:
        assert client.post("/ai_write_probe", headers={"Authorization": f"Bearer {KEY}"}).is_success
        assert client.post("/ai_write_probe").status_code == 401
        assert client.post("/ai_write_probe", headers={"Last-Event-ID": "x:1"}).is_success
    assert seen == [f"key:{sha(KEY)[:16]}", None]
