"""The compose file and the env example agree with the settings and the image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from qa_service.config import Settings, env_name
from tests.support import podman

REPO = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return compose


def test_compose_runs_the_image_hardened_with_room_to_drain() -> None:
    service = _compose()["services"]["qa-service"]
    assert service["build"]["context"] == "."
    assert service["environment"]["QA_HOST"] == "0.0.0.0"
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert service["tmpfs"] == ["/tmp"]
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    stop_seconds = int(service["stop_grace_period"].removesuffix("s"))
    # The process exits within the answers' grace plus about 2.5 s.
    assert stop_seconds >= grace + 3


def test_compose_runs_two_replicas_on_redis_behind_nginx() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "qa-service", "nginx"}
    replica = services["qa-service"]
    # podman-compose honours deploy.replicas only with an explicit mode.
    assert replica["deploy"] == {"mode": "replicated", "replicas": 2}
    assert replica["environment"]["QA_REDIS_URL"] == "redis://redis:6379/0"
    assert "ports" not in replica, "only nginx is published"
    assert replica["depends_on"]["redis"]["condition"] == "service_healthy"

    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert redis["command"] == ["redis-server", "--save", "", "--appendonly", "no"]

    nginx = services["nginx"]
    assert nginx["image"].startswith("nginx:")
    assert nginx["ports"] == ["8000:8000"]
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]


def test_nginx_config_balances_without_stickiness_and_streams_unbuffered() -> None:
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    lines = {line.strip() for line in conf.splitlines() if not line.strip().startswith("#")}
    for setting in (
        "server qa-service:8000;",
        "listen 8000;",
        "zone qa_service 64k;",
        "proxy_pass http://qa_service;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_buffering off;",
        "proxy_cache off;",
        "proxy_read_timeout 1h;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Request-ID $http_x_request_id;",
        "proxy_set_header Last-Event-ID $http_last_event_id;",
    ):
        assert setting in lines, setting
    code = " ".join(lines)
    for sticky in ("ip_hash", "hash ", "sticky", "least_conn"):
        assert sticky not in code, sticky


def test_env_example_names_only_real_settings() -> None:
    known = {env_name(field) for field in Settings.model_fields} | {
        "LANGSMITH_TRACING",
        "LANGSMITH_PROJECT",
    }
    lines = (REPO / ".env.example").read_text().splitlines()
    names = {
        line.lstrip("# ").split("=", 1)[0]
        for line in lines
        if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }
    assert names <= known, names - known
    assert "OPENAI_API_KEY" in names


# The Python each Debian suite's python3 is: the stand-in must run the image's.
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}


def test_the_container_tests_stand_in_ships_the_python_the_image_names() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    (shipped,) = re.findall(r"^ARG BASE_IMAGE=python:(\d+\.\d+)-slim$", dockerfile, re.M)
    script = (REPO / "scripts" / "container-base.sh").read_text()
    (suite,) = re.findall(r"^SUITE=(\w+)$", script, re.M)
    assert DEBIAN_PYTHON[suite] == shipped
    compose = (REPO / "docker-compose.yml").read_text()
    assert f"BASE_IMAGE: python:{shipped}-slim" in compose
    # A cached tarball or imported image of another suite is never taken for this one.
    assert 'TARBALL="$CACHE/python-base-$SUITE.tar"' in script
    assert "IMAGE=localhost/python-base:$SUITE" in script
    assert f"localhost/python-base:{suite}" == podman.BASE_IMAGE


def test_dockerfile_base_is_a_build_argument_and_cmd_is_exec_form() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile
    assert 'CMD ["qa-service", "serve"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "USER qa" in dockerfile
