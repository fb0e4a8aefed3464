"""Start-up: a wrong configuration stops with one line naming the setting; health endpoints.

The refusals run `serve` in this process (the refused_start fixture); one of
each kind also runs as a real process, for its exit status and its stderr.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from qa_service.access.descriptors import streams_within
from qa_service.config import Settings
from tests.integration.conftest import RefusedStart
from tests.support.service import RunningService, run_service, service_env


def _serve_fails(settings: dict[str, str], workdir: Path) -> str:
    """`python -m qa_service serve`, refused: its one line on stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "qa_service", "serve", "--port", "0"],
        env=service_env(settings),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"QA_PROVIDER": "anthropic"}, "QA_PROVIDER"),
        ({"QA_PROVIDER": "openai"}, "OPENAI_API_KEY"),
        ({"QA_PROVIDER": "groq", "GROQ_API_KEY": "  "}, "GROQ_API_KEY"),
        ({"QA_TEMPERATURE": "hot"}, "QA_TEMPERATURE"),
        ({"QA_MAX_QUERY_CHARS": "0"}, "QA_MAX_QUERY_CHARS"),
        ({"QA_DEFAULT_PROMPT": "missing"}, "QA_DEFAULT_PROMPT"),
        ({"QA_PROMPTS_DIR": "/nonexistent/prompts"}, "/nonexistent/prompts"),
        ({"QA_PROVIDER": "demo", "OPENAI_BASE_URL": "notaurl"}, "OPENAI_BASE_URL"),
        ({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "127.0.0.1:11434/v1"}, "OPENAI_BASE_URL"),
        ({"GROQ_API_KEY": "k", "GROQ_BASE_URL": "ftp://files.example"}, "GROQ_BASE_URL"),
        ({"GROQ_API_KEY": "k", "GROQ_BASE_URL": "http://h:port"}, "GROQ_BASE_URL"),
        ({"QA_READYZ_PROBE": "maybe"}, "QA_READYZ_PROBE"),
        ({"QA_API_KEYS": "too-short"}, "QA_API_KEYS"),
        ({"QA_API_KEYS_FILE": "/nonexistent/api-keys"}, "QA_API_KEYS_FILE"),
        ({"QA_TICKET_TTL_SECONDS": "0"}, "QA_TICKET_TTL_SECONDS"),
        # Several workers share answers and limits only through Redis.
        ({"QA_PROVIDER": "demo", "QA_WORKERS": "2"}, "QA_WORKERS=2 needs QA_REDIS_URL"),
    ],
)
def test_wrong_configuration_stops_start_up_with_one_line(
    refused_start: RefusedStart, tmp_path: Path, settings: dict[str, str], names: str
) -> None:
    line = refused_start(settings, tmp_path)
    assert line.startswith("qa-service: configuration error: ")
    assert names in line


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        ('system = "s"\n', "'user'"),
        ('system = "s"\nuser = "no variable"\n', "{concept}"),
        ('system = "s"\nuser = "{concept} and {other}"\n', "other"),
        ('system = "s {concept}"\nuser = "x"\n', "'user' part"),
        ('system = "s"\nuser = "{concept"\n', "invalid template"),
        ("not toml at all [", "unreadable"),
        ('system = "s"\nuser = "{concept}"\ncolour = "red"\n', "unknown keys"),
    ],
)
def test_a_broken_prompt_file_stops_start_up_naming_the_file(
    refused_start: RefusedStart, tmp_path: Path, content: str, fault: str
) -> None:
    line = refused_start({"QA_PROMPTS_DIR": str(_prompts_with(tmp_path, content))}, tmp_path)

    assert "broken.toml" in line
    assert fault in line


def _prompts_with(workdir: Path, broken: str) -> Path:
    prompts = workdir / "prompts"
    prompts.mkdir()
    (prompts / "explain.toml").write_text('system = "s"\nuser = "{concept}"\n')
    (prompts / "broken.toml").write_text(broken)
    return prompts


def test_a_real_process_refused_at_start_up_exits_2_with_one_line_on_stderr(
    tmp_path: Path,
) -> None:
    """The in-process refusals above, once of each kind (settings, prompts) for real."""
    settings_line = _serve_fails({"QA_PROVIDER": "anthropic"}, tmp_path)
    prompts = _prompts_with(tmp_path, 'system = "s"\n')
    prompt_line = _serve_fails({"QA_PROMPTS_DIR": str(prompts)}, tmp_path)

    assert settings_line.startswith("qa-service: configuration error: QA_PROVIDER")
    assert prompt_line.startswith("qa-service: configuration error: ")
    assert "broken.toml" in prompt_line


@pytest.mark.parametrize("setting", ["QA_PORT", "QA_PROVIDER", "QA_TEMPERATURE"])
def test_a_rejected_value_is_never_echoed_in_the_error_line(
    refused_start: RefusedStart, tmp_path: Path, setting: str
) -> None:
    # A key pasted into the wrong variable must not be printed back.
    secret = "sk-test-do-not-print-me-0123456789"
    line = refused_start({setting: secret, "OPENAI_API_KEY": secret}, tmp_path)
    assert line.startswith(f"qa-service: configuration error: {setting}:")
    assert secret not in line
    assert secret[:8] not in line


# A password in each form of QA_REDIS_URL (stores/redis_urls.py): never echoed.
REDIS_SECRET = "not-a-real-redis-secret-0123"


@pytest.mark.parametrize(
    ("url", "fault"),
    [
        (f"memcached://:{REDIS_SECRET}@127.0.0.1:1", "must be a redis://"),
        (f"redis+sentinel://{REDIS_SECRET}@127.0.0.1:1", "needs the service name"),
        (f"redis+sentinel://{REDIS_SECRET}@127.0.0.1:1/qa/zero", "database that is not a number"),
        (f"redis+cluster://:{REDIS_SECRET}@127.0.0.1:x", "port that is not a number"),
        (f"redis+cluster://:{REDIS_SECRET}@127.0.0.1:1/3", "only database 0"),
        (f"redis+cluster://{REDIS_SECRET}@", "at least one host:port"),
        (
            f"rediss://:{REDIS_SECRET}@127.0.0.1:1/0?ssl_ca_certs=/nonexistent/ca.pem",
            "ssl_ca_certs",
        ),
        (f"rediss://:{REDIS_SECRET}@127.0.0.1:1/0?ssl_ca=/etc/ca.pem", "'ssl_ca'"),
        # Well formed, and nobody there: the one line says where, without the password.
        (f"redis+cluster://:{REDIS_SECRET}@127.0.0.1:1", "cannot reach Redis at redis+cluster://"),
        (f"redis://:{REDIS_SECRET}@127.0.0.1:1/0", "cannot reach Redis at redis://127.0.0.1:1/0"),
    ],
)
def test_a_redis_url_that_cannot_be_used_stops_start_up_naming_it_never_its_password(
    refused_start: RefusedStart, tmp_path: Path, url: str, fault: str
) -> None:
    line = refused_start({"QA_PROVIDER": "demo", "QA_REDIS_URL": url}, tmp_path)
    assert line.startswith("qa-service: configuration error: QA_REDIS_URL: ")
    assert fault in line
    assert REDIS_SECRET[:8] not in line


def test_a_real_process_with_no_sentinel_there_exits_2_with_one_line(
    tmp_path: Path,
) -> None:
    # A closed port: Sentinel cannot name a primary, within start-up's deadline.
    url = f"redis+sentinel://{REDIS_SECRET}@127.0.0.1:1/qa-primary"
    line = _serve_fails({"QA_PROVIDER": "demo", "QA_REDIS_URL": url}, tmp_path)
    assert line.startswith(
        "qa-service: configuration error: QA_REDIS_URL: cannot reach Redis at "
        "redis+sentinel://127.0.0.1:1/qa-primary/0 ("
    )
    assert REDIS_SECRET[:8] not in line


def test_a_base_url_is_never_echoed_in_the_error_line(
    refused_start: RefusedStart, tmp_path: Path
) -> None:
    # A base URL can carry credentials: the line names the setting, not the value.
    secret = "sk-test-do-not-print-me-0123456789"
    line = refused_start({"OPENAI_BASE_URL": f"htp://user:{secret}@host/v1"}, tmp_path)
    assert line.startswith("qa-service: configuration error: OPENAI_BASE_URL: must be an http")
    assert secret[:8] not in line


def test_health_and_readiness(openai_service: RunningService) -> None:
    assert httpx.get(f"{openai_service.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{openai_service.url}/readyz").json()
    assert ready == {
        "status": "ready",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "demo_fallback": False,
        "max_query_chars": 4000,
    }


def test_prompts_are_listed(openai_service: RunningService) -> None:
    listing = httpx.get(f"{openai_service.url}/prompts").json()
    assert listing["default"] == "explain"
    names = [p["name"] for p in listing["prompts"]]
    assert names == sorted(names)
    assert {"explain", "eli5", "outline"} <= set(names)


def test_auto_without_keys_falls_back_to_demo_loudly(tmp_path: Path) -> None:
    with run_service({"QA_DEMO_CHUNK_DELAY_MS": "0"}, tmp_path) as service:
        ready = httpx.get(f"{service.url}/readyz").json()
        records = service.log_records()
    assert ready["provider"] == "demo"
    assert ready["demo_fallback"] is True
    assert "keyless demo provider" in ready["notice"]
    assert ready["scenarios"][0] == "normal"
    assert "unicode" in ready["scenarios"]
    warnings = [r["message"] for r in records if r["level"] == "WARNING"]
    assert any("DEMO provider" in message for message in warnings)


def test_the_ready_log_line_says_where_the_page_is(openai_service: RunningService) -> None:
    messages = [r["message"] for r in openai_service.log_records()]
    assert f"ready; open {openai_service.url}/" in messages


def test_the_open_file_limit_is_raised_to_the_hard_limit_and_logged(workdir: Path) -> None:
    soft, hard = 256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= soft:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    with run_service({}, workdir, open_files=(soft, hard)) as service:
        limits = Path(f"/proc/{service.process.pid}/limits").read_text()
        (line,) = [r for r in service.log_records() if r["message"] == "open file limit"]

    max_open = next(row.split()[3:5] for row in limits.splitlines() if "open files" in row)
    raised = int(max_open[0])
    assert raised > soft
    assert max_open[0] == max_open[1] or hard == resource.RLIM_INFINITY
    assert line["raised_from"] == soft
    assert line["open_files"] == raised
    idle = Settings.model_fields["upstream_max_idle_connections"].default
    assert line["concurrent_streams_about"] == streams_within(
        raised, redis=False, idle_connections=idle
    )
