"""A real redis-server (Debian's package) on 127.0.0.1, started and stopped by PID.

No persistence (`--save ''`, `--appendonly no`), its own working directory, a
free port that `restart()` keeps, so clients configured with `.url` find it
again after a restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.daemon import NotReadyError, wait_until
from tests.support.ports import free_port

REDIS_SERVER = "redis-server"


@dataclass(frozen=True)
class RedisTraffic:
    """What Redis served: calls per command, and the bytes in and out of it."""

    calls: dict[str, int] = field(default_factory=dict)
    input_bytes: int = 0
    output_bytes: int = 0

    def __sub__(self, before: RedisTraffic) -> RedisTraffic:
        names = self.calls.keys() | before.calls.keys()
        calls = {n: self.calls.get(n, 0) - before.calls.get(n, 0) for n in names}
        return RedisTraffic(
            {n: c for n, c in calls.items() if c},
            self.input_bytes - before.input_bytes,
            self.output_bytes - before.output_bytes,
        )

    def __add__(self, other: RedisTraffic) -> RedisTraffic:
        names = self.calls.keys() | other.calls.keys()
        return RedisTraffic(
            {n: self.calls.get(n, 0) + other.calls.get(n, 0) for n in names},
            self.input_bytes + other.input_bytes,
            self.output_bytes + other.output_bytes,
        )

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


@dataclass
class RedisServer:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    # More of redis-server's options (a replica's --replicaof, a cluster node's).
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None, "redis-server is not running"
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, timeout: float = 5.0) -> redis.Redis:
        """A synchronous client, for assertions. The caller closes it."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def command(self) -> list[str]:
        """The redis-server command line: no persistence, its own directory and log."""
        return [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
        self._wait_for_ping(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID, SIGKILL if it is still there after `timeout`."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL by PID: a crash, with no chance to answer anyone."""
        self._signal(signal.SIGKILL, 5.0)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop it and start it again on the same port, empty (nothing is persisted)."""
        self.stop(timeout)
        deadline = time.monotonic() + timeout
        # The port is ours until someone else binds it; in the meantime a few
        # retries cover a socket the kernel has not released yet.
        while True:
            try:
                self.start(max(deadline - time.monotonic(), 1.0))
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def command_stats(self) -> RedisTraffic:
        """Calls per command (INFO commandstats) and bytes in and out (INFO stats).

        The INFO calls themselves are counted too; compare two readings
        (`after - before`) and subtract the one INFO call of each reading.
        """
        with self.client() as client:
            commands = client.info("commandstats")
            stats = client.info("stats")
        calls = {
            name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in commands.items()
        }
        return RedisTraffic(
            calls,
            int(stats["total_net_input_bytes"]),
            int(stats["total_net_output_bytes"]),
        )

    def _signal(self, signum: int, timeout: float) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.kill(process.pid, signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def _wait_for_ping(self, timeout: float) -> None:
        def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start-up:\n{self.logs()}")
            try:
                with self.client(timeout=1.0) as client:
                    return bool(client.ping())
            except redis.exceptions.RedisError:
                return False

        try:
            wait_until(answers, timeout, f"redis-server on port {self.port} answering PING")
        except NotReadyError:
            self._signal(signal.SIGKILL, 5.0)
            raise


def require_redis_server() -> None:
    if shutil.which(REDIS_SERVER) is None:
        raise RuntimeError("redis-server is needed: ./scripts/system-deps.sh installs it")


@contextmanager
def run_redis(workdir: Path, timeout: float = 10.0) -> Iterator[RedisServer]:
    """A fresh redis-server on a free port of 127.0.0.1, stopped by PID at exit."""
    require_redis_server()
    directory = workdir / f"redis-{time.monotonic_ns()}"
    directory.mkdir(parents=True)
    server = RedisServer(free_port(), directory)
    server.start(timeout)
    try:
        yield server
    finally:
        server.stop()
