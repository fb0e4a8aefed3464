"""A real nginx (Debian's package) in front of service replicas, on 127.0.0.1.

The proxy settings are the shipped ones: deploy/nginx.conf, with only its
upstream servers and its listen address replaced. nginx runs in the
foreground (`daemon off`) as the calling user, with its pid file, logs and
temporary files in a directory of its own, and is stopped by PID.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemon import NotReadyError, wait_until
from tests.support.ports import free_port
from tests.support.service import REPO

NGINX = "/usr/sbin/nginx"
DEPLOY_CONF = REPO / "deploy" / "nginx.conf"

_UPSTREAM_SERVER = re.compile(r"^(\s*)server qa-service:8000;\n", re.MULTILINE)
_LISTEN = re.compile(r"^(\s*)listen 8000;\n", re.MULTILINE)
_ACCESS_LOG = re.compile(r"^(\s*)access_log /var/log/nginx/access.log qa_service;\n", re.MULTILINE)


def site_config(backends: Sequence[str], port: int, access_log: Path) -> str:
    """deploy/nginx.conf with `backends` ("host:port") as the upstream, listening on
    `port`, logging in the shipped format to `access_log`."""
    if not backends:
        raise ValueError("nginx needs at least one backend")
    shipped = DEPLOY_CONF.read_text()
    # Fail loudly if the shipped file changes shape, rather than test something else.
    for pattern in (_UPSTREAM_SERVER, _LISTEN, _ACCESS_LOG):
        found = len(pattern.findall(shipped))
        if found != 1:
            raise AssertionError(f"{DEPLOY_CONF}: {pattern.pattern!r} matched {found} times")
    config = _UPSTREAM_SERVER.sub(
        lambda m: "".join(f"{m.group(1)}server {backend};\n" for backend in backends), shipped
    )
    config = _LISTEN.sub(lambda m: f"{m.group(1)}listen 127.0.0.1:{port};\n", config)
    return _ACCESS_LOG.sub(lambda m: f"{m.group(1)}access_log {access_log} qa_service;\n", config)


def main_config(workdir: Path, site: Path) -> str:
    """The main file that the official image's nginx.conf stands for: everything in `workdir`."""
    # As root, nginx would switch its workers to `nobody`, who cannot enter a
    # test's tmp directory; keep them as the calling user. Ignored otherwise.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = {name: workdir / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    return (
        user
        + "daemon off;\n"
        + "master_process on;\n"
        + "worker_processes 1;\n"
        + f"pid {workdir / 'nginx.pid'};\n"
        + f"error_log {workdir / 'error.log'} info;\n"
        + "events { worker_connections 1024; }\n"
        + "http {\n"
        + f"    access_log {workdir / 'access.log'};\n"
        + f"    client_body_temp_path {temp['client_body']};\n"
        + f"    proxy_temp_path {temp['proxy']};\n"
        + f"    fastcgi_temp_path {temp['fastcgi']};\n"
        + f"    uwsgi_temp_path {temp['uwsgi']};\n"
        + f"    scgi_temp_path {temp['scgi']};\n"
        + f"    include {site};\n"
        + "}\n"
    )


@dataclass
class Nginx:
    port: int
    workdir: Path
    config_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "nginx is not running"
        return self.process.pid

    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        path = self.workdir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _paths(self) -> list[str]:
        # -e: the error log from the first moment, before the configuration is read
        # (the compiled-in /var/log/nginx/error.log is not ours to write).
        error_log = str(self.workdir / "error.log")
        return ["-p", str(self.workdir), "-e", error_log, "-c", str(self.config_path)]

    def check_config(self) -> None:
        """`nginx -t` on the generated files; raises with nginx's own words."""
        result = subprocess.run(
            [NGINX, "-t", "-q", *self._paths()],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{result.stderr}")

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        with (self.workdir / "stderr.log").open("ab") as stderr:
            self.process = subprocess.Popen(
                [NGINX, *self._paths()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self._wait_accepting(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the master by PID (a fast shutdown: open streams are cut)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop it and start it again on the same port; every open connection is cut."""
        self.stop(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.start(max(deadline - time.monotonic(), 1.0))
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _wait_accepting(self, timeout: float) -> None:
        def accepting() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited at start-up:\n{self.error_log()}")
            with socket.socket() as sock:
                sock.settimeout(1)
                try:
                    sock.connect(("127.0.0.1", self.port))
                except OSError:
                    return False
                return True

        try:
            wait_until(
                accepting, timeout, f"nginx accepting on port {self.port}", describe=self.error_log
            )
        except NotReadyError:
            self.stop()
            raise


@contextmanager
def run_nginx(backends: Sequence[str], workdir: Path, timeout: float = 10.0) -> Iterator[Nginx]:
    """nginx on a free port of 127.0.0.1, balancing over `backends` ("host:port")."""
    if not Path(NGINX).exists():
        raise RuntimeError("nginx is needed: ./scripts/system-deps.sh installs it")
    port = free_port()
    directory = workdir / f"nginx-{port}"
    directory.mkdir(parents=True)
    site = directory / "qa-service.conf"
    site.write_text(site_config(backends, port, directory / "access.log"))
    config = directory / "nginx.conf"
    config.write_text(main_config(directory, site))
    server = Nginx(port, directory, config)
    server.check_config()
    server.start(timeout)
    try:
        yield server
    finally:
        server.stop()
