"""The kernel's view of TCP connections on 127.0.0.1 (/proc/net/tcp), for tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ESTABLISHED = "01"


@dataclass(frozen=True)
class TcpSocket:
    state: str  # the kernel's hex state code: 01 ESTABLISHED, 04 FIN_WAIT1, ...
    send_queue: int  # bytes written by the owner and not yet acknowledged by the peer


def tcp_socket(local_port: int, remote_port: int) -> TcpSocket | None:
    """The IPv4 socket from `local_port` to `remote_port`, if the kernel still has one."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.rsplit(":", 1)[1], 16) == local_port and (
            int(remote.rsplit(":", 1)[1], 16) == remote_port
        ):
            return TcpSocket(state=fields[3], send_queue=int(fields[4].split(":")[0], 16))
    return None


def unread_bytes(local_port: int) -> int:
    """Bytes that have reached the established IPv4 sockets on `local_port` and
    that their owner has not read yet (a stopped server's pending commands)."""
    unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == local_port and fields[3] == ESTABLISHED:
            unread += int(fields[4].split(":")[1], 16)
    return unread
