"""Message contracts (schemas/, docs/configuration.md): what goes in and out of Kafka, and what a judge must answer.

These models are the single source of truth; `modstream schemas` writes their JSON Schemas
to `schemas/` so producers and downstream consumers can validate without Python.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

# Compatibility rule (docs/workflow.md): consumers ignore fields they do not know; adding a field
# never bumps the version, removing, renaming or re-typing one (or a new `decision` value) does.
VERDICT_SCHEMA_VERSION = "2"
REVIEW_SCHEMA_VERSION = "1"

# Post-level decision. `review`: a human must decide; `interim_action` says what to apply meanwhile.
Decision = Literal["allow", "label", "age_gate", "hide", "review"]
# What a policy asks for when it is violated (front matter `action`, per severity).
Action = Literal["hide", "label", "age_gate", "review"]
# What a platform applies to a post (the decision without `review`).
Applied = Literal["allow", "label", "age_gate", "hide"]
Severity = Literal["low", "medium", "high", "severe"]
# Where a verdict came from: the live stream, a reviewer, an appeal, the back-scan sweep.
Route = Literal["stream", "review", "appeal", "sweep"]
Tier = Literal["funnel", "t1", "t2", "human"]
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
    # None: no judge gave a valid answer (then `unresolved` is true).
    violation: bool | None
    severity: Severity = "medium"
    # What the policy asks for when violated (front matter); applied only when violation and resolved.
    action: Action = "hide"
    # No decision without a human: no valid answer, tier 2 overturned a severe tier-1 violation, ...
    unresolved: bool = False
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
    # No `signals` (schema 2): the matched keywords and patterns are on the audit record only.
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
    """One per valid post on the actions topic, keyed by post id. Never carries reasoning.

    Supersession: a later decision on the same post (review, appeal, sweep) is a new verdict with a
    higher `revision` naming the one it replaces in `supersedes`; consumers keep the verdict with the
    greatest (revision, verdict_id) pair, whatever order they read them in. `verdict_id` is derived
    deterministically (worker/cascade/revisions.py), so a replay after a crash repeats the same id.
    """

    schema_version: str = VERDICT_SCHEMA_VERSION
    post_id: str
    verdict_id: str = ""
    revision: int = Field(default=1, ge=1)
    supersedes: str | None = None
    route: Route = "stream"
    decision: Decision
    # Set when decision == "review": what to apply while a human decides (a severe unresolved
    # policy always makes it "hide"); None otherwise.
    interim_action: Applied | None = None
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
    verdict_id: str = ""
    revision: int = 1
    decision: Decision
    calls: list[AuditCall]
    source: SourceRef
    # What the public verdict leaves out: each policy's result with its rationale, and the funnel's
    # matched keywords/patterns (an evasion map if published).
    results: list[PolicyResult] = Field(default_factory=list)
    funnel_signals: dict[str, list[str]] = Field(default_factory=dict)


class AuditRef(BaseModel):
    """Where a verdict's audit record is: the audit topic, keyed by post id, carrying `verdict_id`."""

    topic: str
    post_id: str
    verdict_id: str


class ReviewPolicy(BaseModel):
    """One policy of a post under review, with what each tier said."""

    policy_id: str
    policy_version: str
    severity: Severity
    action: Action
    # The reviewer must decide this policy (unresolved, or a violation whose action is `review`);
    # false: listed for context (a resolved policy of the same post).
    unresolved: bool
    # The cascade's best guess (the deciding answer, else tier 1's, else false): `confirm` keeps it,
    # `overturn` flips it.
    proposed_violation: bool
    t1: PolicyResult | None = None
    t2: PolicyResult | None = None


ReviewReason = Literal["unresolved", "review_action", "severe_negative", "appeal", "deadline", "sweep"]


class ReviewRecord(BaseModel):
    """Review topic record, keyed by post id: one post waiting for a human."""

    schema_version: str = REVIEW_SCHEMA_VERSION
    review_id: str  # = the verdict_id under review: one review per verdict, replays dedupe
    post: Post
    verdict_id: str
    revision: int
    decision: Decision
    interim_action: Applied | None = None
    reasons: list[ReviewReason]
    policies: list[ReviewPolicy]
    # Higher first: severity weight x (1 - confidence) x age factor (worker/cascade/priority.py).
    priority: float
    audit: AuditRef
    created_at: datetime
    source: SourceRef | None = None


class ReviewerCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy_id: str
    outcome: Literal["confirm", "overturn"]
    reason: str = Field(default="", max_length=2000)


class ReviewDecision(BaseModel):
    """Review-decisions topic record, keyed by post id: a reviewer's call on one review record.
    It is also a label: `modstream eval` and `funnel fit` can read these."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = REVIEW_SCHEMA_VERSION
    decision_id: str
    review_id: str
    post_id: str
    verdict_id: str  # the verdict the reviewer saw (superseded by the resulting verdict)
    revision: int
    reviewer: str = Field(min_length=1)
    calls: list[ReviewerCall] = Field(min_length=1)
    decided_at: datetime


class Appeal(BaseModel):
    """Appeals topic record, keyed by post id: the user contests a verdict."""

    model_config = ConfigDict(extra="ignore")

    appeal_id: StrictStr = Field(min_length=1, max_length=512)
    post: Post
    statement: StrictStr = Field(max_length=5000)
    verdict_id: StrictStr  # the verdict appealed (from the platform's copy of it)
    revision: int = Field(ge=1)
    # Policies contested; unset: every policy the appealed verdict found violated or unresolved.
    policies: list[str] | None = None
    created_at: datetime | None = None
