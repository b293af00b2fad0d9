"""One settings model for the whole worker: env vars `MODSTREAM_*` over an optional YAML file.

Precedence (highest first): init arguments (CLI flags), env vars, the YAML file named by
`MODSTREAM_CONFIG_FILE` (or `--config`), defaults. Nested fields use `__` in env names,
e.g. `MODSTREAM_JUDGE_T1__BASE_URLS='["http://vllm-20b:8000/v1"]'`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from worker.contracts import Confidence, ReasoningEffort

# librdkafka keys we set ourselves; users may not override them through `kafka.extra`,
# because the delivery guarantees depend on them.
RESERVED_KAFKA_KEYS = frozenset(
    {"enable.auto.commit", "enable.auto.offset.store", "enable.idempotence", "group.id", "bootstrap.servers"}
)
# Pass-through prefixes/keys for security and tuning settings.
SECRET_KAFKA_KEYS = frozenset(
    {
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "sasl.jaas.config",
        "ssl.key.pem",
        "ssl_key",
    }
)
# Any other key naming one of these is redacted too (a librdkafka version may add new secrets).
SECRET_KEY_WORDS = ("password", "secret", "token", "credential", "private", "jaas")


def is_secret_kafka_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in SECRET_KAFKA_KEYS or any(word in lowered for word in SECRET_KEY_WORDS)


# Env vars of modstream's own scripts and tests (caches, the vLLM CPU test env), not settings.
TOOLING_ENV_PREFIXES = ("MODSTREAM_CACHE", "MODSTREAM_VLLM_")


class ConfigError(RuntimeError):
    """Start-up configuration problem; the message names the setting and what to do."""


class KafkaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "modstream"
    # Any librdkafka property (security.protocol, sasl.*, ssl.*, tuning), passed through as-is.
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)
    session_timeout_ms: int = Field(default=45000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3000, ge=100)
    partition_assignment_strategy: str = "cooperative-sticky"
    # Records fetched per consume() call.
    batch_size: int = Field(default=500, ge=1, le=100_000)
    commit_interval_s: float = Field(default=1.0, gt=0)

    @field_validator("extra")
    @classmethod
    def _no_reserved_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(RESERVED_KAFKA_KEYS & value.keys())
        if clash:
            raise ValueError(f"kafka.extra may not set {clash}: modstream manages them (use the named settings)")
        return value

    def redacted_extra(self) -> dict[str, Any]:
        return {k: ("***" if is_secret_kafka_key(k) else v) for k, v in self.extra.items()}


class TopicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    posts: str = "posts"
    actions: str = "actions"
    audit: str = "audit"
    dlq: str = "dlq"


class JudgeTierSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_urls: list[str] = Field(min_length=1)
    model: str
    reasoning_effort: ReasoningEffort
    timeout_s: float = Field(default=120.0, gt=0)
    max_in_flight: int = Field(default=64, ge=1)
    # Bearer token if the server requires one (vLLM --api-key).
    api_key: SecretStr | None = None
    # Upper bound on generated tokens; generous, because a tight cap truncates mid-reasoning.
    max_tokens: int = Field(default=4096, ge=64)
    # Retry delay bounds for transport errors and 5xx while the judge is unavailable.
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    # "json_schema" (vLLM) or "json_object" (llama.cpp server, which rejects json_schema).
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    # Circuit breaker per endpoint: open after this many consecutive failures (transport errors,
    # timeouts, 429, 5xx), stay open for the cool-down, then let one probe through.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=10.0, gt=0)

    @field_validator("base_urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL (expected e.g. http://vllm-20b:8000/v1)")
        return [url.rstrip("/") for url in value]


class Tier1JudgeSettings(JudgeTierSettings):
    """Tier 1: gpt-oss-safeguard-20b at low effort, every funnel candidate."""

    base_urls: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8000/v1"], min_length=1)
    model: str = "openai/gpt-oss-safeguard-20b"
    reasoning_effort: ReasoningEffort = "low"


class Tier2JudgeSettings(JudgeTierSettings):
    """Tier 2: gpt-oss-safeguard-120b at high effort, only escalated posts."""

    base_urls: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8001/v1"], min_length=1)
    model: str = "openai/gpt-oss-safeguard-120b"
    reasoning_effort: ReasoningEffort = "high"
    timeout_s: float = Field(default=300.0, gt=0)
    max_in_flight: int = Field(default=16, ge=1)


class EscalationSettings(BaseModel):
    """Which tier-1 results go to tier 2 (DESIGN §6). Each reason is a switch and a metric label."""

    model_config = ConfigDict(extra="forbid")

    on_low_confidence: bool = True
    on_invalid_answer: bool = True
    on_severe: bool = True
    on_funnel_disagreement: bool = True
    # Fraction of tier-1 results sent to tier 2 anyway, for audit (chosen by post id hash).
    audit_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # A tier-2 answer below this confidence is "unsure": the decision becomes `review`.
    t2_min_confidence: Confidence = "medium"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODSTREAM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    judge_t1: Tier1JudgeSettings = Field(default_factory=Tier1JudgeSettings)
    judge_t2: Tier2JudgeSettings = Field(default_factory=Tier2JudgeSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    policies_dir: Path = Path("policies")
    # Poll the policy directory's content hash this often and reload on change (SIGHUP reloads
    # at once); 0 turns polling off.
    policy_reload_interval_s: float = Field(default=2.0, ge=0)
    # per_policy: one judge request per candidate policy (best accuracy, best prefix-cache reuse).
    # multi_policy: one request naming all of a post's candidate policies (fewer requests and
    # prompt tokens; a little less accurate, per OpenAI's guide). See docs/judges.md.
    judge_mode: Literal["per_policy", "multi_policy"] = "per_policy"
    # Posts being worked on at once by this worker; at the cap, partitions are paused.
    max_in_flight: int = Field(default=256, ge=1)
    # On SIGTERM: how long to let in-flight posts finish before committing and exiting.
    drain_timeout_s: float = Field(default=30.0, gt=0)
    # How far one partition may run ahead of its committed offset (records consumed and not yet
    # committable); bounds the replay after a crash. Capped by max_in_flight. See docs/reliability.md.
    max_in_flight_per_partition: int = Field(default=128, ge=1)
    # On a rebalance: how long revoked partitions' in-flight posts may finish before they are
    # abandoned (replayed by the next owner). Keep well under max.poll.interval.ms.
    rebalance_timeout_s: float = Field(default=10.0, gt=0)
    # Judging one post may take this long while the judges answer other posts; then the post goes
    # to the DLQ (`deadline_exceeded`). While no judge answers at all (outage) the post waits.
    record_deadline_s: float = Field(default=300.0, gt=0)
    # A post whose processing raises this many times goes to the DLQ (`processing_error`).
    max_attempts: int = Field(default=3, ge=1)
    # Exactly-once mode: verdicts, audit and DLQ records are produced in Kafka transactions
    # together with the consumed offsets (send_offsets_to_transaction). See docs/reliability.md
    # for what could and could not be verified on the brokers available.
    # Recreate the producer when the cluster answers metadata requests but no record was
    # acknowledged for this long while records wait (see docs/reliability.md).
    producer_stall_s: float = Field(default=60.0, gt=0)
    exactly_once: bool = False
    # Stable per instance (e.g. the pod name of a StatefulSet), so a restarted instance fences its
    # predecessor's open transaction at once; default "modstream-<group>-<hostname>".
    transactional_id: str | None = None
    transaction_timeout_ms: int = Field(default=60000, ge=1000)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    # Records larger than this go to the DLQ unread.
    max_record_bytes: int = Field(default=1_000_000, ge=1024)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = settings_cls.model_config.get("yaml_file") or os.environ.get("MODSTREAM_CONFIG_FILE")
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings or raise ConfigError naming each bad setting and its env var."""
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist (--config / MODSTREAM_CONFIG_FILE)")
        # A subclass carries the file name: no process-wide state is touched.
        settings_cls = type(
            "Settings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": config_file}}
        )
    elif (path := os.environ.get("MODSTREAM_CONFIG_FILE")) and not Path(path).is_file():
        raise ConfigError(f"MODSTREAM_CONFIG_FILE={path} does not exist")
    known = {f"MODSTREAM_{name.upper()}" for name in Settings.model_fields} | {"MODSTREAM_CONFIG_FILE"}
    unknown = sorted(
        var
        for var in os.environ
        if var.upper().startswith("MODSTREAM_")
        and var.upper().split("__")[0] not in known
        and not var.upper().startswith(TOOLING_ENV_PREFIXES)
    )
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except SettingsError as exc:
        # pydantic-settings could not even parse a value (e.g. a list setting given as plain text).
        raise ConfigError(describe_settings_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        dotted = ".".join(str(part) for part in err["loc"])
        env = "MODSTREAM_" + "__".join(str(part).upper() for part in err["loc"] if isinstance(part, str))
        lines.append(f"  - {dotted} (env {env}): {err['msg']}")
    return "\n".join(lines)


def describe_settings_error(exc: SettingsError) -> str:
    """Name the env vars behind an unparseable value: pydantic-settings only names the top field."""
    field = str(exc).split('field "', 1)[-1].split('"', 1)[0]
    suspects = sorted(var for var in os.environ if var.upper().startswith(f"MODSTREAM_{field.upper()}"))
    cause = f": {exc.__cause__}" if exc.__cause__ else ""
    return (
        f"invalid configuration: cannot parse {', '.join(suspects) or field}{cause}. Settings that hold "
        "lists or mappings take JSON in env vars, e.g. MODSTREAM_JUDGE_T1__BASE_URLS='[\"http://vllm:8000/v1\"]'."
    )
