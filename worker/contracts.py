"""Message contracts (schemas/, docs/configuration.md): what goes in and out of Kafka, and what a judge must answer.

These models are the single source of truth; `modstream schemas` writes their JSON Schemas
to `schemas/` so producers and downstream consumers can validate without Python.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

VERDICT_SCHEMA_VERSION = "1"

Decision = Literal["allow", "hide", "review"]
Tier = Literal["funnel", "t1", "t2"]
Confidence = Literal["low", "medium", "high"]
ReasoningEffort = Literal["low", "medium", "high"]


def _check_band(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"a p_violation band is [low, high] with 0 <= low <= high <= 1, got {list(value)}")
    return value


# [low, high]: a p_violation strictly inside escalates (`uncertain_probability`); [0.5, 0.5] is empty.
PViolationBand = Annotated[tuple[float, float], AfterValidator(_check_band)]


class ContextTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    text: StrictStr


class Post(BaseModel):
    """A user post as platforms publish it on the posts topic."""

    model_config = ConfigDict(extra="ignore")

    # Strict strings: a number where text is expected is a producer bug, not something to coerce.
    id: StrictStr = Field(min_length=1, max_length=512)
    text: StrictStr = Field(min_length=1)
    author_id: StrictStr | None = None
    # RFC 3339; kept as text on the way through, validated as a datetime.
    created_at: datetime | None = Field(default=None, json_schema_extra={"format": "date-time"})
    lang: StrictStr | None = None
    context: list[ContextTurn] | None = None
    metadata: dict[str, Any] | None = None


class JudgeAnswer(BaseModel):
    """The output format every policy asks the model for (OpenAI's gpt-oss-safeguard guide)."""

    model_config = ConfigDict(extra="ignore")

    violation: Literal[0, 1]
    policy_category: str | None = None
    rule_ids: list[str] = Field(default_factory=list)
    confidence: Confidence
    rationale: str = Field(default="", max_length=2000)


class PolicyResult(BaseModel):
    policy_id: str
    policy_version: str
    violation: bool
    category: str | None = None
    rule_ids: list[str] = Field(default_factory=list)
    confidence: Confidence
    rationale: str
    # Probability the deciding judge gave its `violation` digit being 1 (from the answer's logprobs);
    # None when the server returned no logprobs or the digit could not be located.
    p_violation: float | None = None
    # The post was too long for the deciding judge's context and was cut (head and tail kept).
    truncated: bool = False
    # Bypass sample (docs/funnel.md, "Recall measured in production"): the funnel cleared the post
    # for this policy and tier 1 judged it anyway, at `sample_rate`, to measure the funnel's
    # recall. Such a result never changes the decision.
    sampled: bool = False
    sample_rate: float | None = None


class FunnelSummary(BaseModel):
    candidates: list[str]
    scores: dict[str, float]
    signals: dict[str, list[str]] = Field(default_factory=dict)
    # What the post was screened under (docs/funnel.md, "Recall measured in production"): every
    # live policy's id -> version in the policy-set snapshot (not only the candidates), and the
    # fitted heads' fit id (None: no heads in use). Empty / None in records from older workers.
    policy_versions: dict[str, str] = Field(default_factory=dict)
    fit: str | None = None


class SourceRef(BaseModel):
    topic: str
    partition: int
    offset: int


class Verdict(BaseModel):
    """One per valid post on the actions topic, keyed by post id. Never carries reasoning."""

    schema_version: str = VERDICT_SCHEMA_VERSION
    post_id: str
    decision: Decision
    results: list[PolicyResult]
    tier: Tier
    model: str | None = None
    reasoning_effort: ReasoningEffort | None = None
    escalated: bool
    escalation_reasons: list[str] = Field(default_factory=list)
    funnel: FunnelSummary
    latency_ms: float
    decided_at: datetime
    worker_version: str
    source: SourceRef


class AuditCall(BaseModel):
    """One judge call as sent and as answered; restricted data (it can quote the post)."""

    tier: Literal["t1", "t2"]
    # A multi-policy call (judge_mode multi_policy) joins the ids and versions with "+" and lists
    # them in `policy_versions`.
    policy_id: str
    policy_version: str
    policy_versions: dict[str, str] | None = None
    # A shadow policy's call: judged and audited, never part of the decision.
    shadow: bool = False
    model: str
    endpoint: str
    reasoning_effort: ReasoningEffort
    request: dict[str, Any]
    reasoning: str | None
    content: str | None
    finish_reason: str | None
    error: str | None
    latency_ms: float
    usage: dict[str, Any] | None = None
    # P(violation digit = 1) from the answer's logprobs; a multi-policy call gives it per policy id
    # in `p_violations`. None: no logprobs, or no digit found.
    p_violation: float | None = None
    p_violations: dict[str, float | None] | None = None
    # The post was cut to fit the context (the request shows what was sent).
    truncated: bool = False


class AuditRecord(BaseModel):
    """Audit topic record, keyed like the verdict: the prompts and the chain of thought."""

    schema_version: str = VERDICT_SCHEMA_VERSION
    post_id: str
    decision: Decision
    calls: list[AuditCall]
    source: SourceRef
