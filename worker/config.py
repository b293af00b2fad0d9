"""One settings model for the whole worker: env vars `MODSTREAM_*` over an optional YAML file.

Precedence (highest first): init arguments (CLI flags), env vars, the YAML file named by
`MODSTREAM_CONFIG_FILE` (or `--config`), defaults. Nested fields use `__` in env names,
e.g. `MODSTREAM_JUDGE_T1__BASE_URLS='["http://vllm-20b:8000/v1"]'`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from worker.config_errors import ConfigError as ConfigError  # re-exported: `from worker.config import ConfigError`
from worker.config_errors import check_yaml_file as check_yaml_file
from worker.config_errors import describe_settings_error, describe_validation_error
from worker.contracts import Confidence, PViolationBand, ReasoningEffort
from worker.ops.tracing import DEFAULT_PASSTHROUGH, RESERVED_PREFIXES, TracingSettings

if TYPE_CHECKING:
    from funnel.language import LanguageConfig

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


# Env vars of modstream's own scripts and tests (caches, the vLLM CPU test env) and of the review
# console's options (`modstream review serve`: MODSTREAM_CONSOLE_TOKENS ...), not settings.
TOOLING_ENV_PREFIXES = ("MODSTREAM_CACHE", "MODSTREAM_VLLM_", "MODSTREAM_CONSOLE_")


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
    # Review queue (worker/review/, docs/workflow.md): records waiting for a human, and their decisions.
    review: str = "review"
    review_decisions: str = "review-decisions"
    appeals: str = "appeals"  # Appeal records, read by `modstream appeals serve`
    retry: str = "retry"  # posts past record_deadline_s waiting for another attempt (docs/workflow.md)


class HeaderSettings(BaseModel):
    """Input Kafka headers copied onto the verdict, audit and DLQ records (docs/operations.md)."""

    model_config = ConfigDict(extra="forbid")

    # Header names (case-insensitive) kept; nothing else is ever copied. `traceparent`/`tracestate`
    # are validated (W3C) and also sent on the judge requests; [] turns passthrough off.
    passthrough: list[str] = Field(default_factory=lambda: list(DEFAULT_PASSTHROUGH))

    @field_validator("passthrough")
    @classmethod
    def _header_names(cls, value: list[str]) -> list[str]:
        names = [name.strip().lower() for name in value]
        bad = [name for name in names if not re.fullmatch(r"[a-z0-9!#$%&'*+.^_`|~-]{1,255}", name)]
        if bad:
            raise ValueError(f"header names must be non-empty tokens (letters, digits, -._ ...): {bad}")
        reserved = [name for name in names if name.startswith(RESERVED_PREFIXES)]
        if reserved:
            raise ValueError(f"{reserved}: error.* and source.* headers are written by the worker on DLQ records")
        return list(dict.fromkeys(names))


class JudgeTierSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_urls: list[str] = Field(min_length=1)
    model: str
    reasoning_effort: ReasoningEffort
    timeout_s: float = Field(default=120.0, gt=0)
    max_in_flight: int = Field(default=64, ge=1)
    # Bearer token if the server requires one (vLLM --api-key).
    api_key: SecretStr | None = None
    # Upper bound on generated tokens (reasoning + answer), sent as `max_tokens`; None sends no cap,
    # so the server lets the answer run to the end of its context. A tight cap truncates mid-reasoning.
    max_tokens: int | None = Field(default=4096, ge=64)
    # The server's --max-model-len (keep equal to it): prompt + max_tokens must fit, or vLLM answers 400.
    max_model_len: int = Field(default=16384, ge=1024)
    # Post-text budget in tokens (the user message, conversation context included): a longer post is
    # cut to its head and tail with a marker, and the result says `truncated: true`. Lowered per
    # request when the policy and max_tokens leave less of the context (docs/judges.md).
    max_post_tokens: int = Field(default=4096, ge=64)
    # Ask for the answer tokens' log-probabilities (top `top_logprobs` alternatives) and derive
    # p_violation, the probability of the `violation` digit (docs/judges.md).
    logprobs: bool = True
    top_logprobs: int = Field(default=5, ge=1, le=20)
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

    @model_validator(mode="after")
    def _fits_the_context(self) -> JudgeTierSettings:
        if self.max_tokens is not None and self.max_tokens >= self.max_model_len:
            raise ValueError(f"max_tokens ({self.max_tokens}) must be below max_model_len ({self.max_model_len})")
        if self.max_post_tokens + (self.max_tokens or 0) >= self.max_model_len:
            raise ValueError(
                f"max_post_tokens + max_tokens ({self.max_post_tokens} + {self.max_tokens or 0}) leaves no room "
                f"for the policy in max_model_len ({self.max_model_len})"
            )
        return self


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
    # No output cap: high effort on the hardest posts must not be cut mid-reasoning; the context bounds it.
    max_tokens: int | None = Field(default=None, ge=64)
    max_model_len: int = Field(default=32768, ge=1024)
    max_post_tokens: int = Field(default=8192, ge=64)


class EscalationSettings(BaseModel):
    """Which tier-1 results go to tier 2 (docs/judges.md, Escalation). Each reason is a switch and a metric label."""

    model_config = ConfigDict(extra="forbid")

    on_low_confidence: bool = True
    on_invalid_answer: bool = True
    on_severe: bool = True
    on_funnel_disagreement: bool = True
    # p_violation (the judge's probability of its `violation` digit) strictly inside this band
    # escalates as `uncertain_probability`; a policy's `escalation.p_violation_band` overrides it.
    on_uncertain_probability: bool = True
    p_violation_band: PViolationBand = (0.25, 0.75)
    # Fraction of tier-1 results sent to tier 2 anyway, for audit (chosen by post id hash).
    audit_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Fraction of the (post, policy) pairs the funnel cleared sent to tier 1 anyway, to measure the
    # funnel's recall (by post id hash); a policy's `funnel.bypass_sample_rate` overrides it.
    bypass_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # A tier-2 answer below this confidence is "unsure": the decision becomes `review`.
    t2_min_confidence: Confidence = "medium"
    # Severe negatives (docs/judges.md §2): a severe policy's tier-1 "safe" vs a very sure funnel -> tier 2;
    on_severe_negative: bool = True
    # tier 2 clearing a severe tier-1 violation -> unresolved (review, reason severe_negative), not allow.
    review_severe_overturn: bool = True


class LanguageSettings(BaseModel):
    """Which languages the funnel may screen alone; the rest go to the judge (docs/funnel.md, "Languages")."""

    model_config = ConfigDict(extra="forbid")

    # ISO 639 codes the funnel's keywords/exemplars read well enough to decide without a judge.
    readable: list[str] = Field(default_factory=lambda: ["en"])
    # Per language code or `default`: judge | funnel | allow, winning over every policy's `languages:`.
    routes: dict[str, Literal["judge", "funnel", "allow"]] = Field(default_factory=dict)
    # Off: no language ID, every post is screened by the funnel alone (the pre-0.2 behaviour).
    detect: bool = True

    @field_validator("readable", "routes")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        keys = value if isinstance(value, list) else list(value)
        bad = [k for k in keys if not re.fullmatch(r"[a-z]{2,3}|default", k)]
        if bad:
            raise ValueError(f"language codes must be 2-3 lower-case letters (ISO 639) or 'default': {bad}")
        return value

    def config(self) -> LanguageConfig | None:
        """As `funnel.language.LanguageConfig`, or None when `detect` is off."""
        from funnel.language import LanguageConfig

        return LanguageConfig(frozenset(self.readable), dict(self.routes)) if self.detect else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODSTREAM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    judge_t1: Tier1JudgeSettings = Field(default_factory=Tier1JudgeSettings)
    judge_t2: Tier2JudgeSettings = Field(default_factory=Tier2JudgeSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    languages: LanguageSettings = Field(default_factory=LanguageSettings)
    headers: HeaderSettings = Field(default_factory=HeaderSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    policies_dir: Path = Path("policies")
    # Publish each policy's rationale on the verdict (it can quote the post); the audit record keeps it.
    public_rationale: bool = False
    # Score with the fitted per-policy heads in the policy directory (funnel-heads.npz, written by
    # `modstream funnel fit`), for the policies whose fit chose its head over today's scoring. On by
    # default: the shipped operating point (held-out recall 0.987 on the public sets, against 0.48
    # without heads); the cost is that most benign posts reach a judge for some policy. False: today's
    # scoring for every policy. Refit on your own traffic to cut that cost (docs/funnel.md).
    funnel_heads: bool = True
    # The funnel's embedding stage (exemplar similarity, and the heads, which read it). False:
    # keywords and patterns only, no embedding model loaded; faster, lower recall (docs/funnel.md).
    funnel_embeddings: bool = True
    # Poll the policy directory's content hash this often and reload on change (SIGHUP reloads
    # at once); 0 turns polling off.
    policy_reload_interval_s: float = Field(default=2.0, ge=0)
    # per_policy: one judge request per candidate policy (best accuracy, best prefix-cache reuse).
    # multi_policy: one request naming all of a post's candidate policies (fewer requests and
    # prompt tokens; a little less accurate, per OpenAI's guide). See docs/judges.md.
    judge_mode: Literal["per_policy", "multi_policy"] = "per_policy"
    # Posts being worked on at once by this worker; at the cap, partitions are paused. 1024 (with
    # 512 per partition, below): with nothing judged, 256 / 128 kept the worker at 0.42-0.65 x the
    # funnel alone, 1024 / 512 at 0.71-0.80 (five alternating pairs, docs/benchmarks.md).
    max_in_flight: int = Field(default=1024, ge=1)
    # On SIGTERM: how long to let in-flight posts finish before committing and exiting.
    drain_timeout_s: float = Field(default=30.0, gt=0)
    # How far one partition may run ahead of its committed offset (records consumed and not yet
    # committable); bounds the replay after a crash. Capped by max_in_flight. See docs/reliability.md.
    max_in_flight_per_partition: int = Field(default=512, ge=1)
    # Cleared posts whose verdicts (fast path) wait only for the broker's acknowledgement may be
    # held on top of both caps, up to this many (0: they count against the caps like any post).
    # See docs/reliability.md.
    max_in_flight_cleared: int = Field(default=1024, ge=0)
    # On a rebalance: how long revoked partitions' in-flight posts may finish before they are
    # abandoned (replayed by the next owner). Keep well under max.poll.interval.ms.
    rebalance_timeout_s: float = Field(default=10.0, gt=0)
    # Judging one post may take this long while the judges answer other posts; then the post goes
    # to the DLQ (`deadline_exceeded`). While no judge answers at all (outage) the post waits.
    record_deadline_s: float = Field(default=300.0, gt=0)
    # A post whose processing raises this many times goes to the DLQ (`processing_error`).
    max_attempts: int = Field(default=3, ge=1)
    # Past record_deadline_s: the retry topic, judged again after the delay, up to retry_max_attempts
    # attempts in all (1: no retry); then the DLQ and a `review` verdict (docs/workflow.md, "Retry topic").
    retry_delay_s: float = Field(default=60.0, ge=0)
    retry_max_attempts: int = Field(default=3, ge=1)
    # Batched fast path for posts the funnel clears (no candidate, no bypass sample): their verdicts
    # are encoded, produced and committed per partition and batch instead of one task per post
    # (same bytes except timings). Off: every post takes the per-post path. See docs/configuration.md.
    fast_path: bool = True
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
    # Threads of the native pools the funnel uses, set once at start-up (worker/ops/threads.py): BLAS
    # (numpy's small matrix products) and the HF tokenizers' rayon pool. 0: the library's default
    # (one per core, spinning beside the GIL-bound loop). A second core comes from a second process.
    blas_threads: int = Field(default=1, ge=0)
    tokenizer_threads: int = Field(default=1, ge=0)

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
    yaml_path = config_file or (Path(path) if (path := os.environ.get("MODSTREAM_CONFIG_FILE")) else None)
    if yaml_path is not None:
        check_yaml_file(yaml_path)
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
