"""The compose file and the env example agree with the settings and the image."""

from __future__ import annotations

from pathlib import Path

import yaml

from qa_service.config import Settings, env_name

REPO = Path(__file__).resolve().parents[2]


def test_compose_runs_the_image_hardened_with_room_to_drain() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    service = compose["services"]["qa-service"]
    assert service["build"]["context"] == "."
    assert service["environment"]["QA_HOST"] == "0.0.0.0"
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    stop_seconds = int(service["stop_grace_period"].removesuffix("s"))
    # The process exits within the answers' grace plus about 2.5 s.
    assert stop_seconds >= grace + 3


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


def test_dockerfile_base_is_a_build_argument_and_cmd_is_exec_form() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.12-slim" in dockerfile
    assert 'CMD ["qa-service", "serve"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert "USER qa" in dockerfile
