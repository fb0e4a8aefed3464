from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from qa_service.config import (
    ConfigError,
    Settings,
    describe_validation_error,
    env_name,
    load_settings,
)


def _settings(**values: object) -> Settings:
    # _env_file=None: a developer's .env must not change what the test sees.
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _refusal(**values: object) -> str:
    """The one line a start-up with these (bad) settings stops with."""
    with pytest.raises(ValidationError) as caught:
        _settings(**values)
    return describe_validation_error(caught.value)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "GROQ_API_KEY", "OPENAI_BASE_URL", "GROQ_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")


@pytest.mark.parametrize(
    ("values", "provider"),
    [
        ({}, "demo"),
        ({"groq_api_key": "g"}, "groq"),
        ({"openai_api_key": "o"}, "openai"),
        ({"openai_api_key": "o", "groq_api_key": "g"}, "openai"),
        ({"openai_api_key": "   "}, "demo"),
        ({"provider": "groq", "groq_api_key": "g", "openai_api_key": "o"}, "groq"),
        ({"provider": "demo", "openai_api_key": "o"}, "demo"),
    ],
)
def test_auto_picks_the_provider_by_which_key_is_set(
    values: dict[str, object], provider: str
) -> None:
    assert _settings(**values).resolved_provider == provider


def test_demo_fallback_is_flagged_only_for_auto() -> None:
    assert _settings().is_demo_fallback
    assert not _settings(provider="demo").is_demo_fallback


def test_model_defaults_per_provider_and_can_be_overridden() -> None:
    assert _settings(groq_api_key="g").resolved_model == "llama-3.1-8b-instant"
    assert _settings(openai_api_key="o").resolved_model == "gpt-4o-mini"
    assert _settings(openai_api_key="o", model="gpt-4.1").resolved_model == "gpt-4.1"


def test_provider_variables_are_read_without_our_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("QA_TEMPERATURE", "0.2")

    settings = load_settings()

    assert settings.openai_api_key == SecretStr("sk-from-env")
    assert settings.openai_base_url == "http://127.0.0.1:1/v1"
    assert settings.temperature == 0.2
    assert "sk-from-env" not in repr(settings)


def test_explicit_provider_without_its_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_PROVIDER", "groq")
    with pytest.raises(ConfigError, match=r"^GROQ_API_KEY is required when QA_PROVIDER=groq$"):
        load_settings()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"openai_api_key": "o", "fallback_provider": "groq"},
            r"^GROQ_API_KEY is required when QA_FALLBACK_PROVIDER=groq$",
        ),
        (
            {"openai_api_key": "o", "fallback_provider": "openai"},
            r"^QA_FALLBACK_PROVIDER and QA_FALLBACK_MODEL name the primary itself "
            r"\(openai gpt-4o-mini\); choose another provider or model$",
        ),
        (
            {"provider": "demo", "groq_api_key": "g", "fallback_provider": "groq"},
            r"^QA_FALLBACK_PROVIDER cannot back up the keyless demo provider$",
        ),
    ],
)
def test_a_fallback_that_cannot_help_is_refused_in_one_line(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(**values).check_runnable()


def test_a_fallback_may_be_the_same_provider_with_another_model() -> None:
    settings = _settings(openai_api_key="o", fallback_provider="openai", fallback_model="gpt-4.1")
    settings.check_runnable()
    assert settings.resolved_fallback_model == "gpt-4.1"
    assert _settings(fallback_provider=" ").fallback_provider is None


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("QA_PROVIDER", "bedrock", "QA_PROVIDER"),
        ("QA_PORT", "99999", "QA_PORT"),
        ("QA_KEEPALIVE_SECONDS", "0", "QA_KEEPALIVE_SECONDS"),
    ],
)
def test_invalid_values_are_named_by_their_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{named}: ")
    assert "\n" not in message


def test_secret_values_lists_every_key() -> None:
    settings = _settings(openai_api_key="o-key", groq_api_key="g-key")
    assert sorted(settings.secret_values()) == ["g-key", "o-key"]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:11434/v1", "https://api.example.com/openai/v1", " http://h/ "]
)
def test_base_urls_that_are_http_urls_are_kept(url: str) -> None:
    settings = _settings(openai_base_url=url, groq_base_url=url)
    assert settings.openai_base_url == url.strip()
    assert settings.groq_base_url == url.strip()


@pytest.mark.parametrize(
    "url", ["notaurl", "localhost:8080", "ftp://h/v1", "http:///v1", "http://h:x"]
)
def test_base_urls_that_are_not_http_urls_are_refused(url: str) -> None:
    line = _refusal(openai_base_url=url)
    assert line.startswith("OPENAI_BASE_URL: ")
    assert url not in line


def test_every_setting_is_in_the_configuration_tables_and_nothing_else() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    section = page.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    # The first cell of each row: "`QA_HOST` / `QA_PORT`" names two settings.
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {name.strip(" `") for cell in first_cells for name in cell.split("/")}
    settings = {env_name(field) for field in Settings.model_fields}
    # The OpenTelemetry SDK reads its own OTEL_* variables (observability/tracing.py).
    documented = {name for name in documented if not name.startswith("OTEL_")}
    assert settings - documented == set(), "settings missing from docs/configuration.md"
    assert documented - settings == set(), "docs/configuration.md lists settings that are gone"


@pytest.mark.parametrize("grace", ["0.3", "0.99", "-1"])
def test_a_resume_grace_shorter_than_a_presence_refresh_is_refused(grace: str) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, resume_grace_seconds=grace)  # type: ignore[call-arg]


@pytest.mark.parametrize("grace", ["0", "1", "5"])
def test_a_resume_grace_of_zero_or_a_second_and_more_is_taken(grace: str) -> None:
    settings = Settings(_env_file=None, resume_grace_seconds=grace)  # type: ignore[call-arg]
    assert settings.resume_grace_seconds == float(grace)


def test_allowed_hosts_are_split_and_normalised() -> None:
    settings = _settings(allowed_hosts=" QA.example.com. , *.apps.example.net,* ")
    assert settings.allowed_hosts == ["qa.example.com", "*.apps.example.net", "*"]
    assert _settings().allowed_hosts == []


@pytest.mark.parametrize(
    "hosts", ["https://qa.example.com", "qa.example.com:8443", "qa.*.com", "qa example.com", "-a.b"]
)
def test_allowed_hosts_that_are_not_names_are_refused(hosts: str) -> None:
    line = _refusal(allowed_hosts=hosts)
    assert line.startswith("QA_ALLOWED_HOSTS: ")
    assert hosts not in line


@pytest.mark.parametrize("prefix", [31, 129])
def test_an_ipv6_client_prefix_out_of_range_is_refused(prefix: int) -> None:
    assert _refusal(ipv6_client_prefix=prefix).startswith("QA_IPV6_CLIENT_PREFIX: ")


def test_reader_bounds_of_zero_are_taken_as_no_bound() -> None:
    settings = _settings(max_readers_per_answer="0", client_max_readers="0")
    assert (settings.max_readers_per_answer, settings.client_max_readers) == (0, 0)
    assert _refusal(client_max_readers="").startswith("QA_CLIENT_MAX_READERS: ")
