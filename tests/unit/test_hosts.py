"""The Host check (api/hosts.py): names that cannot be rebound, and QA_ALLOWED_HOSTS."""

from __future__ import annotations

import pytest

from qa_service.api.hosts import host_allowed

NAMED = ["qa.example.com", "*.apps.example.net", "qa_service"]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        # Never rebindable: localhost and addresses, on any port, with or without a list.
        ("localhost", True),
        ("LocalHost:8443", True),
        ("localhost.:8000", True),
        ("127.0.0.1:8000", True),
        ("10.42.0.17", True),
        ("[::1]:8000", True),
        ("[fd00::17]", True),
        # Listed names, exactly or as subdomains.
        ("qa.example.com", True),
        ("QA.example.COM.:443", True),
        ("team.apps.example.net", True),
        ("apps.example.net", False),
        ("qa.example.com.evil.example", False),
        ("evilqa.example.com", False),
        # A compose service's name, underscore and all.
        ("qa_service:8000", True),
        ("other_service:8000", False),
        # Not a host at all.
        ("", False),
        ("::1", False),  # an IPv6 address must be bracketed in Host
        ("[127.0.0.1]", False),
        ("127.0.0.1:123456", False),
        ("a b", False),
        ("qa.example.com:8000:1", False),
        ("user@qa.example.com", False),
        ("user@team.apps.example.net", False),
    ],
)
def test_which_hosts_the_service_answers_for(host: str, allowed: bool) -> None:
    assert host_allowed(host, NAMED) is allowed


def test_without_a_list_only_localhost_and_addresses_are_ours() -> None:
    assert host_allowed("rebind.attacker.example:8000", []) is False
    assert host_allowed("127.0.0.1:8000", []) is True


def test_a_star_takes_any_host() -> None:
    assert host_allowed("anything.example", ["*"]) is True
