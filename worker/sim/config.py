"""Settings of one simulator: fixed at start (SimConfig) or changeable at run time (FaultSettings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_MODEL = "openai/gpt-oss-safeguard-20b"
FAULT_RATE_FIELDS = (
    "fail_5xx_rate", "timeout_rate", "truncate_rate", "invalid_json_rate", "empty_rate", "unenforced_rate",
)  # fmt: skip


class FaultSettings(BaseModel):
    """Fault injection; `POST /sim/faults` replaces any subset of these while the server runs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    fail_5xx_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    timeout_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    truncate_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    invalid_json_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    empty_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # response_format json_schema given, but not enforced (vLLM #23120): valid JSON that fails the schema.
    unenforced_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # How long a "timeout" request is held before the server gives up on it.
    timeout_hold_s: float = Field(default=60.0, ge=0.0)
    # After the hold: "drop" closes the connection without a response, "answer" replies late.
    timeout_then: Literal["drop", "answer"] = "drop"
    # Outage of the whole server (as a gateway with no healthy backend shows it): completions,
    # /v1/models and /health answer 503.
    outage: bool = False
    # vLLM's engine died (EngineDeadError): /health 503, completions 500, /v1/models still 200.
    engine_dead: bool = False

    @model_validator(mode="after")
    def _rates_fit(self) -> FaultSettings:
        # One uniform draw per request picks at most one fault, so the rates must share [0, 1].
        total = sum(getattr(self, name) for name in FAULT_RATE_FIELDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:.3f}; they must add up to at most 1")
        return self


class SimConfig(FaultSettings):
    """Everything `modstream sim-vllm` accepts; field names are the CLI flags with '_' for '-'."""

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    served_model_name: str = DEFAULT_MODEL
    max_num_seqs: int = Field(default=64, ge=1)
    max_model_len: int = Field(default=32768, ge=16)
    # A time multiplier for the latency model: 1 = as configured, 2 = twice as slow, 0 = instant.
    speed: float = Field(default=1.0, ge=0.0)
    prefill_ms_per_token: float = Field(default=0.02, ge=0.0)
    decode_ms_per_token: float = Field(default=0.2, ge=0.0)
    # Per-token decode time grows with the batch: x (1 + decode_batch_slowdown x running / max_num_seqs).
    decode_batch_slowdown: float = Field(default=1.0, ge=0.0)
    seed: int = 0
    # KV cache size in tokens: bounds the prefix cache (LRU) and is the denominator of kv_cache_usage_perc.
    kv_cache_tokens: int = Field(default=262_144, ge=16)
    block_size: int = Field(default=128, ge=1)
    request_log_size: int = Field(default=5000, ge=0)
    # Which completion tokens `logprobs: true` covers: "all" as vLLM (headers, analysis, content,
    # <|return|>), or "content" (the final answer only: ~10x smaller responses for load tests).
    logprobs_scope: Literal["content", "all"] = "content"

    def fault_settings(self) -> FaultSettings:
        return FaultSettings.model_validate(self.model_dump(include=set(FaultSettings.model_fields)))
