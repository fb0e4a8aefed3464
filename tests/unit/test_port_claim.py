"""supervisor.claim_port: a QA_WORKERS group's port is its own (issue 20, item 7).

Real sockets on 127.0.0.1, in this process: the kernel's own bind rules are
what is under test."""

from __future__ import annotations

import socket

import pytest

from qa_service.supervisor import PortClaimError, claim_port

IN_USE = "address already in use"


@pytest.fixture
def port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reuseport_listener(port: int) -> socket.socket:
    """What a group's worker opened before the fix: a socket any group could join."""
    return socket.create_server(("127.0.0.1", port), reuse_port=True)


def _assert_claim_refused(port: int) -> None:
    with pytest.raises(PortClaimError, match=IN_USE), claim_port("127.0.0.1", port, 2):
        pass


def test_a_claim_gives_each_worker_a_listening_socket_in_one_reuseport_group(port: int) -> None:
    with claim_port("127.0.0.1", port, 3) as listeners:
        assert len(listeners) == 3
        for sock in listeners:
            assert sock.getsockname() == ("127.0.0.1", port)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)


def test_a_second_group_cannot_claim_the_port(port: int) -> None:
    with claim_port("127.0.0.1", port, 2):
        _assert_claim_refused(port)


def test_the_lock_alone_refuses_a_second_group_that_checked_in_the_same_instant(
    port: int,
) -> None:
    # No socket of the first group listens yet (none asked for): only the lock
    # stands between two supervisors that both found the port free.
    with claim_port("127.0.0.1", port, 0):
        _assert_claim_refused(port)


@pytest.mark.parametrize("reuse_port", [True, False])
def test_a_port_another_process_listens_on_cannot_be_claimed(port: int, reuse_port: bool) -> None:
    # An older group (SO_REUSEPORT, no lock), or a single-worker serve.
    other = socket.create_server(("127.0.0.1", port), reuse_port=reuse_port)
    with other, pytest.raises(PortClaimError, match=IN_USE), claim_port("127.0.0.1", port, 2):
        pass


def test_a_group_that_checks_nothing_can_still_join_a_claimed_port(port: int) -> None:
    """The limit of a claim: a process that binds with SO_REUSEPORT and checks
    nothing still joins (the kernel allows it to any process of the same user).
    Only a `serve` that claims is kept out."""
    with claim_port("127.0.0.1", port, 1), _reuseport_listener(port):
        pass


def test_the_port_is_free_again_once_the_claim_ends(port: int) -> None:
    with claim_port("127.0.0.1", port, 2):
        pass
    with claim_port("127.0.0.1", port, 2) as listeners:
        assert len(listeners) == 2


def test_an_ipv6_port_is_claimed_and_refused_alike(port: int) -> None:
    with claim_port("::1", port, 2) as listeners:
        assert all(sock.family == socket.AF_INET6 for sock in listeners)
        with pytest.raises(PortClaimError, match=IN_USE), claim_port("::1", port, 2):
            pass
