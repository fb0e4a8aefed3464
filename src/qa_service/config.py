"""Settings: the only place that reads the environment (and `.env`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from limits import parse_many
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ProviderName = Literal["openai", "groq", "demo"]

DEFAULT_MODELS: dict[ProviderName, str] = {
    "openai": "gpt-4o-mini",
    "groq": "llama-3.1-8b-instant",
    "demo": "demo-writer",
}


# A Bearer token's characters (RFC 6750's b64token), so any key can be sent as one.
API_KEY_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")
MIN_API_KEY_CHARS = 16
# QA_REDIS_URL's forms, as the `limits` library spells them (stores/redis_urls.py).
REDIS_URL_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
# A host name, lower case: letters, digits and hyphens in dot-separated labels
# (RFC 1123), and underscores, which RFC 1123 leaves out but Docker's and
# compose's DNS serve (a service named `qa_service` is reached as qa_service:8000).
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_REQUIRED_KEY = {"openai": "OPENAI_API_KEY", "groq": "GROQ_API_KEY"}


class ConfigError(Exception):
    """A configuration that cannot run; its message is one line naming the setting."""


class Settings(BaseSettings):
    """Service settings. `QA_*` for ours; the providers' own variables for theirs."""

    model_config = SettingsConfigDict(
        env_prefix="QA_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Worker processes on one socket (supervisor.py); more than one needs redis_url.
    workers: int = Field(default=1, ge=1, le=64)
    provider: Literal["auto", "openai", "groq", "demo"] = "auto"
    model: str | None = Field(default=None, description="Model name; default depends on provider")
    # Asked when the provider fails before any text (generation/chat_models.py);
    # it uses that provider's own key and base URL settings.
    fallback_provider: Literal["openai", "groq"] | None = None
    fallback_model: str | None = None
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=512, ge=1)
    prompts_dir: Path = Path("prompts")
    # Reload a prompt file that changes while the service runs (prompt_watch.py).
    prompts_watch: bool = True
    default_prompt: str = "explain"
    max_query_chars: int = Field(default=4000, ge=1)
    # A conversation's earlier turns: refused (422) past these, before any
    # upstream call; then trimmed, oldest turns first, to the token budget
    # (estimated at about four characters a token). 0 tokens: no history sent.
    max_history_messages: int = Field(default=50, ge=0, le=1000)
    max_history_chars: int = Field(default=32_000, ge=0, le=1_000_000)
    max_history_tokens: int = Field(default=2000, ge=0)
    keepalive_seconds: float = Field(default=15.0, gt=0)
    send_timeout_seconds: float = Field(default=30.0, gt=0)
    # Runs of text events merged on the wire within this window (0: off).
    coalesce_ms: float = Field(default=0.0, ge=0, le=10_000)
    # A connection must deliver a request's headers this soon after it opens.
    request_header_timeout_seconds: float = Field(default=10.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    upstream_read_timeout_seconds: float = Field(default=120.0, gt=0)
    # Between two pieces once text has started, however the provider keeps the
    # connection alive meanwhile (SSE comments reset a read timeout, not this).
    upstream_idle_timeout_seconds: float = Field(default=30.0, gt=0)
    # The longest Retry-After worth waiting out before an SDK retry.
    upstream_max_retry_wait_seconds: float = Field(default=8.0, ge=0)
    upstream_max_retries: int = Field(default=2, ge=0, le=10)
    upstream_close_timeout_seconds: float = Field(default=1.0, gt=0)
    # The provider connection pool (generation/upstream.py says why these figures).
    upstream_max_connections: int = Field(default=1000, ge=1, le=100_000)
    upstream_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    upstream_keepalive_seconds: float = Field(default=60.0, ge=0)
    upstream_max_idle_connections: int = Field(default=10, ge=0, le=100_000)
    demo_chunk_delay_ms: float = Field(default=40.0, ge=0)
    demo_pause_seconds: float = Field(default=20.0, ge=0)
    # Docker's default stop timeout is 10 s; the process exits within this + ~2.5 s.
    shutdown_grace_seconds: int = Field(default=6, ge=0, le=300)
    forwarded_allow_ips: str = "127.0.0.1"
    # Origins that may call the API from a browser (CORS). Comma-separated;
    # empty means same-origin only. "*" is allowed only without credentials.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    # /readyz asks the provider (GET {base}/models) instead of only checking
    # that the model client is open. Each probe is a provider request, so its
    # result is kept for readyz_probe_ttl_seconds, whoever polls.
    readyz_probe: bool = False
    readyz_probe_ttl_seconds: float = Field(default=5.0, gt=0, le=3600)
    # Answers outlive their connections (resume with Last-Event-ID). Unset: kept
    # in this process; a Redis URL (REDIS_URL_SCHEMES: one server, Sentinel or a
    # cluster; stores/redis_urls.py reads it) shares them between replicas.
    # A secret: the URL can carry a password.
    redis_url: SecretStr | None = None
    # How long a finished answer can still be resumed.
    resume_ttl_seconds: int = Field(default=300, ge=1, le=86400)
    # How long an answer keeps generating with no reader attached; 0 cancels it
    # when its connection hangs up. Never for a client that cannot resume (an
    # OpenAI chat completion): its hang-up cancels at once (api/opening.py).
    resume_grace_seconds: float = Field(default=5.0, ge=0, le=600)
    # A replica that stops renewing an answer's lease for this long is lost.
    producer_lease_seconds: float = Field(default=3.0, ge=0.5, le=60)
    # With Redis: what a producer makes within this many milliseconds goes to
    # Redis in one call (its last event at once), while a reader on another
    # replica follows the answer: it sees text up to this much later. Readers
    # on the producing replica read it at once, from memory.
    redis_batch_ms: int = Field(default=50, ge=0, le=1000)
    # The same while no reader elsewhere follows the answer: fewer, larger
    # batches, for resumes and failovers only.
    # At most 2 s: a resume elsewhere waits up to 3 s for the batch it is ahead of.
    redis_unwatched_batch_ms: int = Field(default=1000, ge=0, le=2000)
    # With Redis: how long it may be unreachable (a failover, a restart) before
    # answers give up on it; until then they ride it out, held in memory.
    redis_outage_seconds: float = Field(default=30.0, ge=1, le=600)
    # Answers generating in this process at once; past it, 503 over_capacity.
    max_streams: int = Field(default=1000, ge=1, le=100_000)
    # Under it, a limit that follows what the process keeps up with: the event
    # loop's lag (access/adaptive_limit.py). Past it, 503 over_capacity too.
    # Off by default: a core taken by other processes lags the loop as much as
    # the service's own answers do, and on a shared 2-core machine it came down
    # to its floor and admitted 37 of 906 answers (configuration.md says when
    # to turn it on).
    adaptive_limit: bool = False
    # The loop lag (smoothed) above which the limit comes down. A first text
    # waits for several turns of the loop, each about this long: at 25 ms,
    # admitted answers' first text p99 was 1.4-1.9 s on a quiet core at twice
    # its load, at 10 ms 0.7 s (benchmarks/README.md, "The lag target, on a
    # quiet machine").
    adaptive_limit_lag_ms: float = Field(default=10.0, gt=0, le=10_000)
    # The limit never comes down below this many answers.
    adaptive_limit_min: int = Field(default=8, ge=1, le=100_000)
    # Per client (its API key, else its address): answers started per period
    # ("60/minute"), answers at once, and output tokens per period
    # ("200000/day"). Unset: no limit. Shared by replicas through QA_REDIS_URL.
    rate_limit: str | None = None
    client_max_streams: int | None = Field(default=None, ge=1)
    # Readers on this instance at once (a resume needs no key, so these bound
    # what anyone can hold open): of one answer, and of one client's resumes.
    # Past either, 429 too_many_readers. 0: no bound.
    max_readers_per_answer: int = Field(default=32, ge=0)
    client_max_readers: int = Field(default=128, ge=0)
    client_token_budget: str | None = None
    # Hold the response this long for the first text, so that a provider
    # failure before it is a real HTTP status; 0 streams at once.
    first_text_hold_seconds: float = Field(default=5.0, ge=0, le=60)
    # --- The answer cache (issue 22; docs/operations.md "Caching"). Above 0:
    # a finished answer (finish_reason stop) is served again for this long,
    # and identical questions in flight share one provider call. Off by
    # default: with a temperature above 0 answers are not deterministic.
    answer_cache_ttl_seconds: int = Field(default=0, ge=0, le=30 * 86400)
    # A hit is sent at once, or at the original's pace (each gap capped).
    answer_cache_replay: Literal["instant", "original"] = "instant"
    # Whose answers a client may be served: its own (its API key's client, else
    # its address), or every client's.
    answer_cache_scope: Literal["client", "global"] = "client"
    # In-process cache only (no QA_REDIS_URL): the recordings' size bound;
    # past it the least recently used goes.
    answer_cache_max_mb: float = Field(default=64.0, gt=0, le=100_000)
    # Answers reading one shared answer at once (its asker's and its joiners');
    # past it a new question starts another.
    answer_cache_max_joiners: int = Field(default=100, ge=1, le=10_000)
    # API keys (docs/operations.md, "API keys"): either one turns authentication on, and
    # both may be given. QA_API_KEYS is comma-separated raw keys; the file
    # holds only their hashes (access/keys.py reads it at start-up).
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_keys_file: Path | None = None
    # How long a stream ticket (POST /stream-tickets) may wait to be redeemed.
    ticket_ttl_seconds: int = Field(default=60, ge=1, le=3600)

    # --- Guards (issue 20): whom limits count, and which Host names are ours.
    # Without keys, an IPv6 client is the block of this many bits its address
    # is in (access/clients.py): a /56 is what one site is commonly given.
    ipv6_client_prefix: int = Field(default=56, ge=32, le=128)
    # Host names the service answers for besides localhost and IP addresses,
    # which it always does (api/hosts.py): `name`, `*.domain`, or `*` for any.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip().lower().rstrip(".") for host in value.split(",") if host.strip()]
        return value

    @field_validator("allowed_hosts", mode="after")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        for host in value:
            if host != "*" and not HOST_NAME.fullmatch(host.removeprefix("*.")):
                raise ValueError("each entry is a host name (no scheme or port), *.domain, or *")
        return value

    # The providers' standard variables, read without our prefix so that existing
    # deployments and OpenAI-compatible servers (vLLM, llama.cpp, Ollama) just work.
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("openai_base_url", "OPENAI_BASE_URL")
    )
    groq_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("groq_api_key", "GROQ_API_KEY")
    )
    groq_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("groq_base_url", "GROQ_BASE_URL")
    )
    # LangChain reads its tracing variables itself; the key is read here only
    # so that logs can scrub it.
    langsmith_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "langsmith_api_key", "LANGCHAIN_API_KEY", "LANGSMITH_API_KEY"
        ),
    )

    @field_validator("resume_grace_seconds", mode="after")
    @classmethod
    def _grace_off_or_long_enough(cls, value: float) -> float:
        # A reader refreshes its presence about once a second; a shorter grace
        # would cancel answers whose reader is still attached.
        if 0 < value < 1:
            raise ValueError("must be 0 (cancel on hang-up) or at least 1 second")
        return value

    @field_validator("rate_limit", "client_token_budget", mode="after")
    @classmethod
    def _limit_string(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            items = parse_many(value)
        except ValueError:
            items = []
        # parse() would keep the first of "60/minute;1000/day" and drop the
        # rest without a word: one limit, stated once, or a refusal.
        if len(items) != 1 or items[0].amount < 1:
            raise ValueError("must be one amount per period, e.g. 60/minute or 200000/day")
        return value.strip()

    @field_validator("redis_url", mode="after")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        # The scheme only; the rest is read (and refused with one line) at start-up.
        if urlsplit(value.get_secret_value().strip()).scheme not in REDIS_URL_SCHEMES:
            raise ValueError(
                "must be a " + ", ".join(f"{s}://" for s in REDIS_URL_SCHEMES) + " URL"
            )
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str | SecretStr):
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            return [SecretStr(key.strip()) for key in text.split(",") if key.strip()]
        return value

    @field_validator("api_keys", mode="after")
    @classmethod
    def _keys_look_like_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        # The messages never echo a key. A short key can be guessed, and the
        # log scrubber only recognises runs of 8 characters or more.
        for key in value:
            if len(key.get_secret_value()) < MIN_API_KEY_CHARS:
                raise ValueError(f"each key must be at least {MIN_API_KEY_CHARS} characters")
            if not API_KEY_CHARS.fullmatch(key.get_secret_value()):
                raise ValueError("keys may hold only A-Z a-z 0-9 and - . _ ~ + / =")
        return value

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _blank_path_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("openai_api_key", "groq_api_key", "langsmith_api_key", mode="after")
    @classmethod
    def _blank_key_is_no_key(cls, value: SecretStr | None) -> SecretStr | None:
        # `OPENAI_API_KEY=` in a compose file means "not set", not "an empty key".
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @field_validator("fallback_provider", mode="before")
    @classmethod
    def _blank_provider_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("openai_base_url", "groq_base_url", "model", "fallback_model", mode="after")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None

    @field_validator("openai_base_url", "groq_base_url", mode="after")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # Caught at start-up, not on every answer as an upstream_unavailable.
        # The message never echoes the value: a URL can carry credentials.
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:11434/v1")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError("has a port that is not a number") from None
        return value.strip()

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @property
    def resolved_provider(self) -> ProviderName:
        """The provider that answers; `auto` picks by which key is present."""
        if self.provider != "auto":
            return self.provider
        if self.openai_api_key is not None:
            return "openai"
        if self.groq_api_key is not None:
            return "groq"
        return "demo"

    @property
    def is_demo_fallback(self) -> bool:
        """True when `auto` found no key and fell back to the keyless demo."""
        return self.provider == "auto" and self.resolved_provider == "demo"

    @property
    def resolved_model(self) -> str:
        return self.model or DEFAULT_MODELS[self.resolved_provider]

    @property
    def resolved_fallback_model(self) -> str | None:
        if self.fallback_provider is None:
            return None
        return self.fallback_model or DEFAULT_MODELS[self.fallback_provider]

    def with_address(self, host: str | None, port: int | None) -> Settings:
        """These settings, listening where `serve --host/--port` say when they are given."""
        update = {"host": host, "port": port}
        return self.model_copy(update={k: v for k, v in update.items() if v is not None})

    @property
    def local_url(self) -> str:
        """Where this machine reaches the service (a bind-all address means loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def secret_values(self) -> list[str]:
        """Every secret this service holds, for log redaction."""
        keys = (self.openai_api_key, self.groq_api_key, self.langsmith_api_key, *self.api_keys)
        secrets = [key.get_secret_value() for key in keys if key is not None]
        if self.redis_url is not None:
            parts = urlsplit(self.redis_url.get_secret_value().strip())
            # The Sentinel and cluster forms spell a password alone as `password@`.
            lone = parts.scheme.startswith("redis+") and parts.password is None
            password = parts.username if lone else parts.password
            secrets += sorted({password, unquote(password)}) if password else []
        return secrets

    def check_runnable(self) -> None:
        """Raise ConfigError when the chosen provider cannot run."""
        if "*" in self.cors_origins and self.cors_allow_credentials:
            # Browsers refuse it anyway; a configuration that asks for it is a mistake.
            raise ConfigError(
                "QA_CORS_ORIGINS: '*' cannot be combined with QA_CORS_ALLOW_CREDENTIALS=true"
            )
        if self.provider in _REQUIRED_KEY and self.resolved_api_key is None:
            raise ConfigError(
                f"{_REQUIRED_KEY[self.provider]} is required when QA_PROVIDER={self.provider}"
            )
        self._check_fallback()
        if self.workers > 1 and self.redis_url is None:
            raise ConfigError(
                f"QA_WORKERS={self.workers} needs QA_REDIS_URL: worker processes share"
                " answers (resume, cancel) and limits only through Redis"
            )

    def _check_fallback(self) -> None:
        fallback = self.fallback_provider
        if fallback is None:
            return
        if self.resolved_provider == "demo":
            raise ConfigError("QA_FALLBACK_PROVIDER cannot back up the keyless demo provider")
        if self.api_key_for(fallback) is None:
            raise ConfigError(
                f"{_REQUIRED_KEY[fallback]} is required when QA_FALLBACK_PROVIDER={fallback}"
            )
        if (fallback, self.resolved_fallback_model) == (
            self.resolved_provider,
            self.resolved_model,
        ):
            raise ConfigError(
                "QA_FALLBACK_PROVIDER and QA_FALLBACK_MODEL name the primary itself "
                f"({fallback} {self.resolved_model}); choose another provider or model"
            )

    @property
    def auth_enabled(self) -> bool:
        """Whether starting an answer needs an API key (QA_API_KEYS or QA_API_KEYS_FILE)."""
        return bool(self.api_keys) or self.api_keys_file is not None

    @property
    def resolved_api_key(self) -> SecretStr | None:
        return self.api_key_for(self.resolved_provider)

    def api_key_for(self, provider: ProviderName) -> SecretStr | None:
        return {"openai": self.openai_api_key, "groq": self.groq_api_key}.get(provider)


def env_name(field: str) -> str:
    """The environment variable that sets a Settings field."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[-1])
    return f"QA_{field.upper()}"


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first setting at fault, without echoing its value."""
    first = exc.errors(include_url=False, include_input=False)[0]
    field = str(first["loc"][0]) if first["loc"] else "settings"
    return f"{env_name(field)}: {first['msg'].removeprefix('Value error, ')}"


def load_settings(*, runnable: bool = True) -> Settings:
    """Read the environment and `.env`; raise ConfigError with one line on failure.

    `runnable=False` skips the checks that only serving needs (provider keys),
    for `qa-service ask`, which reads only where the service listens.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    if runnable:
        settings.check_runnable()
    return settings
